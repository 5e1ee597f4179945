// Bundles an app on @atm0s-media-sdk/core into one browser script (IIFE) with esbuild.
//   node build.mjs <entry.js> <outfile.js>
// Used by tests/e2e/test_sdk_rooms.py (entry app.js) and scripts/build-room-sample.py (entry room.js).
import * as esbuild from "esbuild";

const [entry, outfile] = process.argv.slice(2);
if (!entry || !outfile) {
  console.error("usage: node build.mjs <entry.js> <outfile.js>");
  process.exit(2);
}
await esbuild.build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["chrome110", "firefox110", "safari16"],
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
});
