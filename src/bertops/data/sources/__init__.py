"""One parser per built-in data source; each reads the files of its pinned package (see bertops.data.fetch)."""
