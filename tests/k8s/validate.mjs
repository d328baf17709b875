// Validates Prometheus Operator objects (JSON lines on stdin) with the models
// of @kubernetes-models/prometheus-operator, generated from the operator's
// Go API types: types, enums, patterns and required fields. Prints one JSON
// line per object: {"ok": true} or {"ok": false, "error": "..."}.
// tests/ops/test_deploy.py runs it; npm ci --prefix tests/k8s installs the models.
import { createInterface } from "node:readline";

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const doc = JSON.parse(line);
  const [group, version] = doc.apiVersion.split("/");
  let result;
  try {
    const module = await import(
      `@kubernetes-models/prometheus-operator/${group}/${version}/${doc.kind}`);
    new module[doc.kind](doc).validate();
    result = { ok: true };
  } catch (error) {
    result = { ok: false, error: String(error && error.message || error) };
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}
