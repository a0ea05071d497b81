#!/usr/bin/env bash
# Reproduce the built-in model that `quantart stylize` uses when no --ckpt is given (docs/model-card.md).
#
#   scripts/train_builtin_model.sh DATA_DIR [RUN_DIR]
#
# DATA_DIR holds train/content/*.jpg (photos) and train/style/*.jpg (paintings), the layout of the project's
# training set (its PROVENANCE.csv names every image). The files in scripts/builtin_model_excluded.txt are
# left out (held-out evaluation images and one painting of unclear copyright). RUN_DIR (default
# runs/builtin) gets one folder per phase. Run it again after an interruption: a finished phase is skipped
# and an unfinished one continues exactly where it stopped (--resume). The last phase writes
# RUN_DIR/builtin.safetensors; copy it to quantart_cli/core/weights/ to ship it.
#
# Phases, all with seed 23 and the presets named (step counts are in the presets):
#   base   train-vq --preset builtin-base    photos + paintings, from scratch
#   art    train-vq --preset builtin-art     paintings, from base
#   photo  train-vq --preset builtin-photo   photos, from base
#   paint  train-vq --preset builtin-paint   paintings, from art: VGG19 perceptual loss + PatchGAN (strokes)
#   sga    train-sga --preset builtin-paint  photo VQGAN -> paint VQGAN, from images, image-space VGG19 terms
#   refine train-sga --preset builtin-refine the sga model fine-tuned (--init-from): content term almost off,
#                                             sliced VGG19 style term, pixel colour-distribution term
#   export convert refine/last.pt -> builtin.safetensors (weights only, no optimizer or discriminator)
# PHASES="base art" limits the run to those phases. QUANTART (default: quantart) is the command used.
set -euo pipefail

data=${1:?usage: scripts/train_builtin_model.sh DATA_DIR [RUN_DIR]}
runs=${2:-runs/builtin}
phases=${PHASES:-base art photo paint sga refine export}
qa=${QUANTART:-quantart}
here=$(cd "$(dirname "$0")" && pwd)
seed=23
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

for sub in train/content train/style; do
  [ -d "$data/$sub" ] || { echo "$data/$sub is not a folder; DATA_DIR must hold train/content and train/style." >&2; exit 2; }
done
mkdir -p "$runs"

# One list file per image set: every JPEG of the folder minus the excluded names, sorted (stable order).
make_list() {  # make_list OUT SUBFOLDER...
  local out=$1; shift
  local excluded
  excluded=$(grep -v -e '^#' -e '^[[:space:]]*$' "$here/builtin_model_excluded.txt" || true)
  for sub in "$@"; do
    (cd "$data" && ls "$sub"/*.jpg)
  done | LC_ALL=C sort | grep -vxF -e "$excluded" | sed "s|^|$(cd "$data" && pwd)/|" > "$out"
}
make_list "$runs/photos.txt" train/content
make_list "$runs/paintings.txt" train/style
make_list "$runs/all.txt" train/content train/style
echo "training on $(wc -l < "$runs/photos.txt") photos and $(wc -l < "$runs/paintings.txt") paintings" >&2

wants() { [[ " $phases " == *" $1 "* ]]; }

# run_phase NAME STAGE ARGS...: skip when done, resume when started, else start in RUN_DIR/NAME.
run_phase() {
  local name=$1 stage=$2; shift 2
  local dir="$runs/$name"
  if [ -e "$dir/DONE" ]; then
    echo "phase $name: done already ($dir)" >&2
    return
  fi
  if [ -e "$dir/state.pt" ]; then
    echo "phase $name: resuming $dir" >&2
    "$qa" "$stage" --resume "$dir" "$@"
  else
    echo "phase $name: starting $dir" >&2
    "$qa" "$stage" --out "$dir" "$@"
  fi
  touch "$dir/DONE"
}

if wants base; then
  run_phase base train-vq --preset builtin-base --seed $seed --data "$runs/all.txt"
fi
if wants art; then
  run_phase art train-vq --preset builtin-art --seed $seed --data "$runs/paintings.txt" \
    --init-from "$runs/base/last.pt"
fi
if wants photo; then
  run_phase photo train-vq --preset builtin-photo --seed $seed --data "$runs/photos.txt" \
    --init-from "$runs/base/last.pt"
fi
if wants paint; then
  run_phase paint train-vq --preset builtin-paint --seed $seed --data "$runs/paintings.txt" \
    --init-from "$runs/art/last.pt"
fi
if wants sga; then
  run_phase sga train-sga --preset builtin-paint --seed $seed \
    --content-vq "$runs/photo/last.pt" --style-vq "$runs/paint/last.pt" \
    --content-data "$runs/photos.txt" --style-data "$runs/paintings.txt"
fi
if wants refine; then
  run_phase refine train-sga --preset builtin-refine --seed $seed --init-from "$runs/sga/last.pt" \
    --content-data "$runs/photos.txt" --style-data "$runs/paintings.txt"
fi
if wants export; then
  "$qa" convert --overwrite "$runs/refine/last.pt" "$runs/builtin.safetensors"
  echo "wrote $runs/builtin.safetensors" >&2
fi
