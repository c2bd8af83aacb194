"""Full fine-tuning vs adapters (LoRA per task) vs frozen features on one encoder: test score,
trainable parameters (% of the encoder), bytes stored per task and batch-1 CPU latency
(bertops.evaluate.modes; the evaluate stage's rows without the rest of the stage).

Every variant runs with the project's `finetune:` section (params.yaml, plus -S overrides), the
same encoder, seed and tasks; the test split is scored once per variant, nothing is chosen on it.
--full-lrs / --adapters-lrs: a rate grid for that row, the best on validation kept (as
evaluate.lr_grid / evaluate.adapters_lr_grid); --latency N: N timed batch-1 requests per row.
Prints the Markdown table and writes it with the rows as JSON to --out.

    .venv/bin/python bench/finetune_modes.py [--init-dir minilm] [--variants finetune adapters
        feature_extraction:last] [--seed 1] [--threads 2] [--max-test N]
        [--full-lrs 1e-4 3e-4] [--adapters-lrs 1e-3 3e-3] [--latency 50]
        [-S finetune.max_train_examples_per_task=300 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bertops.env import apply_offline_env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init-dir", default="minilm", help="encoder dir, or minilm (default)")
    ap.add_argument("--variants", nargs="+", default=["finetune", "adapters", "feature_extraction:last"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-test", type=int, default=None, help="score a fixed sample of N per task (as evaluate)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--full-lrs", type=float, nargs="+", default=[], help="full fine-tuning's rate grid")
    ap.add_argument("--adapters-lrs", type=float, nargs="+", default=[], help="the adapters' rate grid")
    ap.add_argument("--latency", type=int, default=0, help="timed batch-1 requests per row (0: none)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="KEY=VALUE (params.yaml keys)")
    ap.add_argument("--out", default="bench/out/finetune_modes")
    args = ap.parse_args(argv)
    apply_offline_env()

    import os

    import torch
    import yaml

    from bertops.config import load_params
    from bertops.data.tasks import TaskSpec
    from bertops.evaluate import modes
    from bertops.evaluate.metrics import task_metrics
    from bertops.stages.evaluate import _limited_task_params
    from bertops.train.finetune import predict_split, resolve_init_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("BERTOPS_TRACKING", "off")
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    params = load_params(args.params, {**overrides, "evaluate.split": args.split,
                                       "evaluate.max_test_examples_per_task": args.max_test})
    tasks = list(params.finetune.tasks) or list(params.tasks)
    specs = {t: TaskSpec.from_params(t, params.tasks[t]) for t in tasks}
    init_dir = resolve_init_dir(args.init_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.rmtree(out / "data", ignore_errors=True)
    scored = _limited_task_params(params, tasks, out / "data")  # the same sample evaluate scores

    def score(model_dirs):
        run = {}
        for t, spec in specs.items():
            pred, gold = predict_split(str(model_dirs[t]), scored[t], args.split, t)
            run[t] = task_metrics(spec.type, pred, gold, spec.labels)
        return run

    from bertops.evaluate import latency

    t0 = time.perf_counter()
    grids = {"finetune": args.full_lrs, "adapters": args.adapters_lrs}
    fitted = modes.fit_all(params, params.finetune, args.variants, init_dir, out / "runs", args.seed, tasks,
                           grids=grids)  # every fit before the test split is read
    timer, timing = latency.probe(specs, scored, args.split, args.latency, args.threads or 1)
    result = modes.score_all(fitted, score, {t: s.type for t, s in specs.items()},
                             {t: s.metric for t, s in specs.items()}, timer)
    result["markdown"] = "\n".join(modes.report_lines(result, args.seed, timing)[1:])
    md = (f"Encoder {args.init_dir}, seed {args.seed}, split {args.split} (at most {args.max_test} per task), "
          f"overrides {overrides or 'none'}; "
          f"{time.perf_counter() - t0:.0f} s\n\n" + result["markdown"])
    print(md)
    (out / "table.md").write_text(md)
    (out / "rows.json").write_text(json.dumps({"overrides": overrides, "init_dir": args.init_dir, "seed": args.seed,
                                               "rows": result["rows"], "margin": result["margin"],
                                               "latency": timing}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
