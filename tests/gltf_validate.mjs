// Usage: node gltf_validate.mjs VALIDATOR_PACKAGE_DIR FILE.glb
// Prints the Khronos glTF validator's report for FILE as JSON; exits 1 if the validator could not run.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const [packageDir, file] = process.argv.slice(2);
const validator = createRequire(import.meta.url)(resolve(packageDir));
try {
  const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), { uri: file });
  console.log(JSON.stringify(report));
} catch (error) {
  console.error(String(error));
  process.exit(1);
}
