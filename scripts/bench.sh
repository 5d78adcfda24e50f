#!/usr/bin/env bash
# Measures SPEC §7's L1 hit target: requests/s of voxgate serving a
# cache-aside GET from L1 against nginx serving the same bytes as a static
# file (1 worker, keep-alive, access log off), same wrk settings, same run.
# Objects: a 300 B JSON STT result and a 32 KiB WAV. Also reports idle RSS.
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
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
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

run() { # url -> "rps p50_ms p99_ms"
  wrk -t"$THREADS" -c"$CONN" -d"${DUR}s" --latency "$1" >"$work/wrk.out" 2>&1
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
