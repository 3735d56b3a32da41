#!/bin/bash
# issue 29: RssAnon / RssFile of convert (balanced, CPU) every 2 s, on the 12-layer 1B-shaped folder bench_convert_memory.py wrote (--keep)
# run convert, sample RssAnon / RssFile of the process every 2 s
python -m tpa_compress.cli convert /tmp/memb/1b-12L --recipe recipes/balanced.yaml --out /tmp/memb/out12 --force --device cpu --max-shard-mib 2048 > /tmp/memb/conv12.log 2>&1 &
pid=$!
peakA=0; peakF=0
while kill -0 $pid 2>/dev/null; do
  read a f < <(awk '/RssAnon/{a=$2} /RssFile/{f=$2} END{print a, f}' /proc/$pid/status 2>/dev/null)
  [ -n "$a" ] && echo "$(date +%s) anon=$((a/1024))MiB file=$((f/1024))MiB"
  sleep 2
done > /tmp/memb/rss12.txt
