// Shared by the node-postgres scripts: run the cases named on the command line (all when none),
// print `ok <case>` / `FAIL <case>: <why>`, exit non-zero if any failed.

function runCases(cases) {
  (async () => {
    const names = process.argv.slice(2);
    let failed = 0;
    for (const name of names.length ? names : Object.keys(cases)) {
      try {
        await cases[name]();
        console.log(`ok ${name}`);
      } catch (e) {
        failed++;
        console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
      }
    }
    process.exit(failed ? 1 : 0);
  })();
}

module.exports = { runCases };
