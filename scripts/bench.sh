#!/usr/bin/env bash
# Measures SPEC §7's L1 hit target: requests/s of voxgate serving a
# cache-aside GET from L1 against nginx serving the same bytes as a static
# file (1 worker, keep-alive, access log off), same wrk settings, same run.
# Objects: a 300 B JSON STT result and a 32 KiB WAV. Also reports idle RSS,
# the Redis tier against redis-benchmark, and the gateway miss overhead.
# Not a test: it prints numbers and ratios. Usage: scripts/bench.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONN=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
# voxgate gets as many HTTP threads as nginx has workers (1), so both
# servers have the same CPU; the second core runs wrk.
VG_THREADS=${BENCH_VG_THREADS:-1}
bash scripts/deps.sh build
for p in wrk nginx-light curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk nginx-light curl >/dev/null; break; }
done
[ -f build-bench/build.ninja ] || meson setup build-bench --buildtype=release -Db_ndebug=true >/dev/null
ninja -C build-bench voxgate >/dev/null

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/www" "$work/nginx"

# The objects: exactly the bytes both servers will send.
python3 - "$work/www" <<'PY'
import json, struct, sys, os
d = sys.argv[1]
res = {"text": "the quick brown fox jumps over the lazy dog " * 5, "language": "en", "duration_ms": 2140}
s = json.dumps(res, separators=(",", ":"))
s = s[:-1] + ',"pad":""}'
s = s[:-2] + "x" * (300 - len(s)) + '"}'
assert len(s) == 300, len(s)
open(os.path.join(d, "result.json"), "w").write(s)
n = 32768 - 44
wav = b"RIFF" + struct.pack("<I", 36 + n) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", n) + os.urandom(n)
open(os.path.join(d, "audio.wav"), "wb").write(wav)
PY

chmod -R a+rX "$work"
NGINX_PORT=18081
VG_PORT=18080
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  types { application/json json; audio/wav wav; }
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$NGINX_PORT; root $work/www; }
}
NGX
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &

VOXGATE_THREADS=$VG_THREADS VOXGATE_LISTEN=127.0.0.1:$VG_PORT VOXGATE_DATA_DIR=$work/data VOXGATE_LOG_LEVEL=info \
  ./build-bench/voxgate >"$work/voxgate.log" 2>&1 &
VG_PID=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$VG_PORT/health" >/dev/null && break; sleep 0.05; done
sleep 0.5
rss_idle=$(awk '/VmRSS/ {print $2}' /proc/$VG_PID/status)

H1=$(sha256sum "$work/www/result.json" | cut -d' ' -f1)
H2=$(sha256sum "$work/www/audio.wav" | cut -d' ' -f1)
STT="/v1/cache/stt?provider=bench&language=en&audio_hash=$H1"
TTS="/v1/cache/tts?provider=bench&language=en&voice=slt&text_hash=$H2"
curl -sf -X PUT "127.0.0.1:$VG_PORT$STT" -H 'Content-Type: application/json' --data-binary @"$work/www/result.json" >/dev/null
curl -sf -X PUT "127.0.0.1:$VG_PORT$TTS" -H 'Content-Type: audio/wav' --data-binary @"$work/www/audio.wav" >/dev/null
# Prove both servers send identical bytes before timing anything.
cmp <(curl -sf "127.0.0.1:$VG_PORT$STT") "$work/www/result.json"
cmp <(curl -sf "127.0.0.1:$VG_PORT$TTS") "$work/www/audio.wav"
cmp <(curl -sf "127.0.0.1:$NGINX_PORT/audio.wav") "$work/www/audio.wav"
curl -sI "127.0.0.1:$VG_PORT$STT" | grep -qi 'x-cache-tier: l1'

run() { # [wrk options...] url -> "rps p50_ms p99_ms"
  wrk -t"$THREADS" -c"$CONN" -d"${DUR}s" --latency "$@" >"$work/wrk.out" 2>&1
  awk '/Requests\/sec/ {rps=$2}
       /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
       END {print rps, p50, p99}' "$work/wrk.out"
}
printf '%-22s %12s %10s %10s\n' object server req/s p50 p99 | sed 's/ p50/ p50 /' >/dev/null
printf '%-12s %-8s %12s %10s %10s\n' object server 'req/s' p50 p99
for obj in json wav; do
  if [ $obj = json ]; then vu="http://127.0.0.1:$VG_PORT$STT"; nu="http://127.0.0.1:$NGINX_PORT/result.json"
  else vu="http://127.0.0.1:$VG_PORT$TTS"; nu="http://127.0.0.1:$NGINX_PORT/audio.wav"; fi
  read -r n_rps n_p50 n_p99 < <(run "$nu")
  read -r v_rps v_p50 v_p99 < <(run "$vu")
  printf '%-12s %-8s %12s %10s %10s\n' "$obj" nginx "$n_rps" "$n_p50" "$n_p99"
  printf '%-12s %-8s %12s %10s %10s\n' "$obj" voxgate "$v_rps" "$v_p50" "$v_p99"
  awk -v v="$v_rps" -v n="$n_rps" -v o="$obj" 'BEGIN {printf "ratio %-6s voxgate/nginx = %.2f (target >= 0.90)\n", o, v / n}'
done
rss_load=$(awk '/VmRSS/ {print $2}' /proc/$VG_PID/status)
echo "voxgate RSS: idle ${rss_idle} KiB (target <= 10240), after load ${rss_load} KiB"
echo "settings: wrk -t$THREADS -c$CONN -d${DUR}s; nginx 1 worker; voxgate $VG_THREADS thread(s), log level info (stdout to a file)"

# ---- Redis tier and rate limits (issue 4): SPEC §7 ----
# L2 hit: a second voxgate on Redis whose L1 keeps nothing (max_item_bytes
# 1), so every GET is GET+PTTL in Redis, against redis-benchmark GET of the
# same value with the same client count. Rate-limit check: POST
# /v1/ratelimit/check (gcra, a limit never reached) against
# redis-benchmark EVALSHA of the same script with the same arguments; the
# server-side p99 is voxgate's own requests.latency on a fresh instance.
for p in redis-server redis-tools; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools >/dev/null; break; }
done
RPORT=18379
redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >"$work/redis.log" 2>&1 &
for _ in $(seq 100); do redis-cli -p $RPORT ping >/dev/null 2>&1 && break; sleep 0.05; done
R="redis-cli -p $RPORT"
vg_redis() { # port event_loop -> starts voxgate on Redis, L1 effectively off
  VOXGATE_THREADS=$VG_THREADS VOXGATE_LISTEN=127.0.0.1:$1 VOXGATE_DATA_DIR=$work/data-$1 VOXGATE_LOG_LEVEL=warn \
    VOXGATE_EVENT_LOOP=$2 VOXGATE_REDIS_URL=redis://127.0.0.1:$RPORT VOXGATE_CACHE_L1_MAX_ITEM_BYTES=1 \
    ./build-bench/voxgate >"$work/voxgate-$1.log" 2>&1 &
  for _ in $(seq 100); do curl -sf "127.0.0.1:$1/health" >/dev/null && break; sleep 0.05; done
}
RB_N=${BENCH_REDIS_REQUESTS:-200000}
# The box drifts between runs (2 shared cores): each comparison runs
# ROUNDS times, voxgate then Redis, and reports the median round's ratio.
ROUNDS=${BENCH_ROUNDS:-3}
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
rb() { # redis-benchmark args... -> req/s
  redis-benchmark -p $RPORT -c "$CONN" -n "$RB_N" -P 1 --csv "$@" 2>/dev/null | tail -1 | cut -d, -f2 | tr -d '"'
}
python3 - "$work/www" <<'PY'
import json, os, sys
d = sys.argv[1]
s = json.dumps({"text": "x" * (32768 - 11)}, separators=(",", ":"))
assert len(s) == 32768, len(s)
open(os.path.join(d, "result32k.json"), "w").write(s)
PY
BODY='{"key":"bench","limit":1000000,"window_ms":1000,"algorithm":"gcra"}'
cat > "$work/check.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA

# The Redis comparisons on one event_loop; $1 is the loop, $2 the first
# of two ports (an L2 instance and a fresh one for the checks).
redis_section() {
  local loop=$1 p2=$2 p3=$(($2 + 1)) pids
  vg_redis "$p2" "$loop"
  pids=$!
  echo
  echo "---- event_loop $loop"
  printf '%-22s %12s %10s %10s\n' 'L2 (Redis) hit' 'req/s' p50 p99
  for obj in result.json result32k.json; do
    h=$(sha256sum "$work/www/$obj" | cut -d' ' -f1)
    u="/v1/cache/stt?provider=bench&language=en&audio_hash=$h"
    key=$(curl -sf -X PUT "127.0.0.1:$p2$u" -H 'Content-Type: application/json' --data-binary @"$work/www/$obj" |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
    curl -sI "127.0.0.1:$p2$u" | grep -qi 'x-cache-tier: l2'
    ratios=""
    for round in $(seq "$ROUNDS"); do
      read -r v_rps v_p50 v_p99 < <(run "http://127.0.0.1:$p2$u")
      r_rps=$(rb GET "$key")
      printf '%-22s %12s %10s %10s\n' "$obj voxgate" "$v_rps" "$v_p50" "$v_p99"
      printf '%-22s %12s\n' "$obj redis GET" "$r_rps"
      ratios="$ratios $(awk -v v="$v_rps" -v r="$r_rps" 'BEGIN {printf "%.2f", v / r}')"
    done
    echo "ratio $obj voxgate L2 / redis GET = $(median $ratios) (target >= 0.80; rounds:$ratios; event_loop $loop)"
  done

  vg_redis "$p3" "$loop"
  pids="$pids $!"
  # The script's SHA as voxgate sends it, seen through MONITOR.
  $R monitor >"$work/monitor.out" 2>&1 &
  local mon=$!
  sleep 0.2
  curl -sf -X POST "127.0.0.1:$p3/v1/ratelimit/check" -H 'Content-Type: application/json' -d "$BODY" >/dev/null
  sleep 0.2
  kill $mon 2>/dev/null || true
  SHA=$(grep -o '"EVALSHA" "[0-9a-f]*"' "$work/monitor.out" | head -1 | cut -d'"' -f4)
  echo
  printf '%-22s %12s %10s %10s\n' 'ratelimit check' 'req/s' p50 p99
  ratios=""
  for round in $(seq "$ROUNDS"); do
    read -r c_rps c_p50 c_p99 < <(run -s "$work/check.lua" "http://127.0.0.1:$p3/v1/ratelimit/check")
    e_rps=$(rb EVALSHA "$SHA" 1 voxgate:rl:gcra:bench 1000 1000000 1 0)
    printf '%-22s %12s %10s %10s\n' 'voxgate HTTP' "$c_rps" "$c_p50" "$c_p99"
    printf '%-22s %12s\n' 'redis EVALSHA' "$e_rps"
    ratios="$ratios $(awk -v v="$c_rps" -v r="$e_rps" 'BEGIN {printf "%.2f", v / r}')"
  done
  srv_p99=$(curl -sf "127.0.0.1:$p3/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"]["latency"]["p99_us"])')
  echo "ratio check voxgate / redis EVALSHA = $(median $ratios) (target >= 0.80; rounds:$ratios; event_loop $loop)"
  echo "server-side p99 of the check runs: ${srv_p99} us (target <= 200; event_loop $loop)"
  kill $pids 2>/dev/null || true
}
# Both event loops by default (docs/configuration.md, event_loop): epoll
# is the default, poll the setting for few connections and many parked
# requests, which is what this load is.
port=18083
for loop in ${BENCH_EVENT_LOOPS:-epoll poll}; do
  redis_section "$loop" "$port"
  port=$((port + 2))
done
echo "settings: redis-benchmark -c$CONN -n$RB_N -P 1; voxgate $VG_THREADS thread(s) on Redis, L1 max_item_bytes 1;"
echo "$ROUNDS rounds of voxgate then redis-benchmark, ratio of each round, median of the rounds"

# ---- Gateway (issue 6): SPEC §7 miss overhead ----
# p50 of a miss through voxgate (one OpenAI-compatible provider, the fake
# of the black-box suite) minus p50 of the same fake called directly. A
# latency, measured on a quiet box: the servers of the sections above
# are stopped first.
kill $(jobs -p) 2>/dev/null || true
wait 2>/dev/null || true
echo
node scripts/bench-miss.mjs ./build-bench/voxgate "${BENCH_MISS_REQUESTS:-2000}"
