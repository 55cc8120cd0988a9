// Runs a Python script on real MicroPython (the WebAssembly port, npm
// @micropython/micropython-webassembly-pyscript) with the firmware on its path.
// usage: node runner.mjs <module dir> <firmware dir> <script.py> [extra files...]
// <firmware dir>/aquameter/*.py and *.mpy go to /fw/aquameter. Extra files: *.py go to
// /fw/<basename> (importable helpers), others to /data/<basename>.
// A line "#@toplevel" splits the script into parts run one after another in the same
// globals: this port's gc.collect() frees garbage only between two such runs (it cannot
// scan the WebAssembly stack while Python code is running), so a heap measurement must
// collect in a part of its own.
// Exit code 0 only if the script ran to the end.
import { createRequire } from "node:module";
import { readFileSync, readdirSync } from "node:fs";
import { basename, join } from "node:path";
import { pathToFileURL } from "node:url";

const [moduleDir, firmwareDir, script, ...data] = process.argv.slice(2);
const require = createRequire(join(moduleDir, "noop.js"));
const entry = require.resolve("@micropython/micropython-webassembly-pyscript");
const { loadMicroPython } = await import(pathToFileURL(entry).href);
const mp = await loadMicroPython({
  heapsize: 8 * 1024 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
mp.FS.mkdir("/fw");
mp.FS.mkdir("/fw/aquameter");
mp.FS.mkdir("/data");
for (const name of readdirSync(join(firmwareDir, "aquameter"))) {
  if (name.endsWith(".py") || name.endsWith(".mpy")) {
    mp.FS.writeFile("/fw/aquameter/" + name, readFileSync(join(firmwareDir, "aquameter", name)));
  }
}
for (const path of data) {
  const dir = path.endsWith(".py") ? "/fw/" : "/data/";
  mp.FS.writeFile(dir + basename(path), readFileSync(path));
}
try {
  mp.runPython("import sys\nsys.path.insert(0, '/fw')\n");
  for (const part of readFileSync(script, "utf8").split(/^#@toplevel$/m)) {
    mp.runPython(part);
  }
} catch (err) {
  process.stderr.write(String(err && err.message ? err.message : err) + "\n");
  process.exit(1);
}
