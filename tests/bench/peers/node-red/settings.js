// Node-RED settings for the benchmark: headless (no editor, no HTTP server), no telemetry,
// no diagnostics, flows from flows.json in the user directory the bench gives (-u).
module.exports = {
    flowFile: "flows.json",
    httpAdminRoot: false,
    httpNodeRoot: false,
    httpRoot: false,
    disableEditor: true,
    diagnostics: { enabled: false },
    telemetry: { enabled: false },
    runtimeState: { enabled: false },
    logging: { console: { level: "warn", metrics: false, audit: false } },
    contextStorage: { default: { module: "memory" } },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
};
