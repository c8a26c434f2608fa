#!/usr/bin/env bash
# Regenerate tests/deploy/grafana_dashboard.schema.json from Grafana's own TypeScript
# types (npm @grafana/schema, the classic dashboard JSON model) with
# ts-json-schema-generator. Needs npm; run by hand when upgrading Grafana, not in CI.
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/grafana_dashboard.schema.json"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "@grafana/schema@${GRAFANA_SCHEMA_VERSION:-12.4.11}" \
  ts-json-schema-generator@2 typescript
npx ts-json-schema-generator --no-type-check --type Dashboard \
  --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts -o schema.json
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
