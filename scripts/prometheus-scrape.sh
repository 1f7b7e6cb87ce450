#!/usr/bin/env bash
# A real Prometheus (Debian's `prometheus`) with deploy/prometheus/prometheus.yml and its
# rules, scraping a real tenantd (the embedded store, free ports on 127.0.0.1): waits for a
# scrape and asserts through Prometheus' HTTP API that the target is up, that tenantd's
# series are stored (its build and process series), that every rule loaded and was
# evaluated without error, and that every query of the Grafana dashboard
# (deploy/prometheus/grafana-dashboard.json) runs. The copy of the configuration it runs differs only in the
# target's port and a 1 s scrape and evaluation interval.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/debug/tenantd

missing=()
command -v prometheus >/dev/null || missing+=("prometheus (apt-get install prometheus)")
command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
command -v python3 >/dev/null || missing+=("python3")
[ -x "$bin" ] || missing+=("the tenantd binary ($bin: cargo build --bin tenantd)")
if ((${#missing[@]})); then
  printf 'prometheus-scrape: missing: %s\n' "${missing[@]}" >&2
  exit 1
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

metrics_port=$(free_port)
prometheus_port=$(free_port)
(cd "$work" && exec env -i PATH="$PATH" HOME="$work" "$bin" --listen 127.0.0.1:0 \
  --metrics-listen "127.0.0.1:$metrics_port") >"$work/tenantd.log" 2>&1 &
tenantd_pid=$!
pids+=("$tenantd_pid")

cp "$root/deploy/prometheus/tenantd.rules.yml" "$work/"
sed -e "s/127.0.0.1:9464/127.0.0.1:$metrics_port/" \
  -e 's/scrape_interval: 15s/scrape_interval: 1s/' \
  -e 's/evaluation_interval: 15s/evaluation_interval: 1s/' \
  "$root/deploy/prometheus/prometheus.yml" >"$work/prometheus.yml"
env -i PATH="$PATH" HOME="$work" prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!
pids+=("$prometheus_pid")

api="http://127.0.0.1:$prometheus_port/api/v1"
# check: reads the API's JSON on stdin, runs the Python expression on it as `d`.
check() {
  python3 -c "
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
sys.exit(0 if ($1) else 1)"
}
up='d["data"]["activeTargets"] and all(t["health"] == "up" and t["labels"]["job"] == "tenantd" for t in d["data"]["activeTargets"])'
evaluated='len([r for g in d["data"]["groups"] for r in g["rules"]]) == 11 and all(r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for g in d["data"]["groups"] for r in g["rules"])'
stored='len(d["data"]["result"]) == 1 and float(d["data"]["result"][0]["value"][1]) > 0'

ok=
for _ in $(seq 1 60); do
  for pid in "$tenantd_pid" "$prometheus_pid"; do
    kill -0 "$pid" 2>/dev/null && continue
    echo "prometheus-scrape: FAILED: a process exited early" >&2
    tail -20 "$work/prometheus.log" "$work/tenantd.log" >&2
    exit 1
  done
  if curl -sf "$api/targets" 2>/dev/null | check "$up" &&
    curl -sf "$api/rules" | check "$evaluated" &&
    curl -sf "$api/query" --data-urlencode 'query=process_resident_memory_bytes{job="tenantd"}' | check "$stored" &&
    curl -sf "$api/query" --data-urlencode 'query=tenantd_build_info{job="tenantd"}' | check "$stored"; then
    ok=1
    break
  fi
  sleep 0.5
done
if [ -z "$ok" ]; then
  echo "prometheus-scrape: FAILED: no successful scrape and rule evaluation within 30 s" >&2
  echo "--- targets" >&2; curl -s "$api/targets" >&2 || true
  echo; echo "--- rules" >&2; curl -s "$api/rules" >&2 || true
  echo; echo "--- prometheus log" >&2; tail -20 "$work/prometheus.log" >&2
  echo "--- tenantd log" >&2; tail -20 "$work/tenantd.log" >&2
  exit 1
fi
queries=$(python3 - "$root/deploy/prometheus/grafana-dashboard.json" "$api" <<'PY'
import json, sys, urllib.parse, urllib.request

dashboard, api = sys.argv[1], sys.argv[2]
failed = []
exprs = [t["expr"] for p in json.load(open(dashboard))["panels"] for t in p["targets"]]
for expr in exprs:
    query = expr.replace("$__rate_interval", "1m")
    url = api + "/query?" + urllib.parse.urlencode({"query": query})
    try:
        answer = json.load(urllib.request.urlopen(url))
        if answer["status"] != "success":
            failed.append(f"{expr}: {answer}")
    except Exception as err:  # an HTTP 400 is a query Prometheus refused
        failed.append(f"{expr}: {err}")
for failure in failed:
    print("prometheus-scrape: dashboard query refused:", failure, file=sys.stderr)
print(len(exprs))
sys.exit(1 if failed else 0)
PY
)
echo "prometheus-scrape: Prometheus scraped tenantd (target up, its series stored), evaluated the 11 rules and ran the dashboard's $queries queries"
