#!/usr/bin/env bash
# Regenerate tests/deploy/grafana_dashboard.schema.json from Grafana's own TypeScript
# types (npm @grafana/schema, the classic dashboard JSON model) with
# ts-json-schema-generator. Needs npm; run by hand when upgrading Grafana, not in CI.
# The version must be the one docker-compose.yml pins (grafana/grafana:X.Y.Z):
# tests/deploy/test_grafana_dashboard.py checks they agree.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="$root/tests/deploy/grafana_dashboard.schema.json"
pinned="$(sed -n 's|^ *image: grafana/grafana:\([0-9.]*\).*|\1|p' "$root/docker-compose.yml")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "@grafana/schema@${GRAFANA_SCHEMA_VERSION:-$pinned}" \
  ts-json-schema-generator@2 typescript
# The file moved between releases (11.x: dist/esm/raw/.../dashboard_types.gen.d.ts,
# 12.x: dist/types/raw/.../types.gen.d.ts).
types="$(find node_modules/@grafana/schema/dist -path '*raw/dashboard/x/*types.gen.d.ts' | head -n 1)"
npx ts-json-schema-generator --no-type-check --type Dashboard --path "$types" -o schema.json
version="$(node -p 'require("@grafana/schema/package.json").version')"
python3 - "$version" "$out" <<'PY'
import json, sys
version, out = sys.argv[1], sys.argv[2]
schema = json.load(open("schema.json"))
schema = {"$comment": f"Generated from @grafana/schema {version} (raw/dashboard/x Dashboard) "
          "by tests/deploy/grafana/generate-schema.sh; do not edit.", **schema}
open(out, "w").write(json.dumps(schema, indent=2) + "\n")
PY
echo "wrote $out"
