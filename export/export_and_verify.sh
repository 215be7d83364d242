#!/usr/bin/env bash
# Export a trained model to every format and print the parity table.
# Usage: export/export_and_verify.sh WORK_DIR CONFIG [OUT_DIR]
#   WORK_DIR: a `keras-deeplab train` work dir (uses its best.keras)
#   CONFIG:   the config it was trained with (its data calibrates int8)
set -euo pipefail
work_dir=${1:?work dir}; config=${2:?config}; out=${3:-exported}
keras-deeplab export --model "$work_dir/best.keras" --config "$config" --format all --out "$out"
keras-deeplab verify-export "$out" --config "$config" --model "$work_dir/best.keras"
