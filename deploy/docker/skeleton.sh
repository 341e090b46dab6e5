#!/bin/sh
# Writes the workspace's skeleton to DEST: Cargo.toml, Cargo.lock, every member's
# manifest, and a stub (`fn main() {}`) at each of its target files (src/lib.rs,
# src/main.rs, build.rs, src/bin/*.rs, benches/*.rs, tests/*.rs, examples/*.rs,
# and every `path = "....rs"` of a [lib], [[bin]], [[test]], [[bench]] or
# [[example]]). deploy/Dockerfile builds the skeleton first: that layer holds every
# dependency compiled and stays cached until a manifest or Cargo.lock changes, the
# same layering cargo-chef does, without a tool to install. tests/deploy/check.sh
# checks that cargo loads the skeleton with --locked.
#
# Usage (from the workspace root): deploy/docker/skeleton.sh DEST
set -eu
dest="$1"
mkdir -p "$dest"
cp Cargo.toml Cargo.lock "$dest/"
# fuzz/ is excluded from the workspace (and from the image's build context).
find . -name Cargo.toml -not -path './target/*' -not -path './fuzz/*' -not -path './Cargo.toml' \
  -not -path '*/.venv/*' | sort | while read -r manifest; do
  dir="$(dirname "$manifest")"
  mkdir -p "$dest/$dir"
  cp "$manifest" "$dest/$dir/"
  {
    for f in src/lib.rs src/main.rs build.rs; do
      if [ -e "$dir/$f" ]; then echo "$f"; fi
    done
    for d in src/bin benches tests examples; do
      if [ -d "$dir/$d" ]; then find "$dir/$d" -maxdepth 1 -name '*.rs' | sed "s|^$dir/||"; fi
    done
    # Only .rs paths: a `path = "../crate"` of a dependency table is no target.
    sed -n 's/^path *= *"\([^"]*\.rs\)" *$/\1/p' "$manifest"
  } | sort -u | while read -r target; do
    mkdir -p "$dest/$dir/$(dirname "$target")"
    echo 'fn main() {}' >"$dest/$dir/$target"
  done
done
