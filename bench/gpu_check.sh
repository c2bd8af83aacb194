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
