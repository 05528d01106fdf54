// Builds every JavaScript policy here (DIR/policy.js) into a component, OUT/DIR.wasm, against
// the repository's wit/ package: node build.mjs [OUT] (default ../../target/policies/js).
//
// No WASI feature is enabled (stdio, random, clocks, http): the components import only the
// sluice:policy interfaces, which the host grants.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const wit = resolve(here, '../../wit');
const out = resolve(process.argv[2] ?? join(here, '../../target/policies/js'));
await mkdir(out, { recursive: true });

let built = 0;
for (const name of (await readdir(here)).sort()) {
  const source = join(here, name, 'policy.js');
  if (!(await stat(source).catch(() => null))) continue;
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: source,
    witPath: wit,
    worldName: 'policy',
    disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
  });
  const target = join(out, `${name}.wasm`);
  await writeFile(target, component);
  console.log(`js: ${name} -> ${target} (${(component.length / 1048576).toFixed(1)} MiB, ${Date.now() - started} ms)`);
  built += 1;
}
if (built === 0) {
  console.error('js: no DIR/policy.js found');
  process.exit(1);
}
