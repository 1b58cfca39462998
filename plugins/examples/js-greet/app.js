// js-greet: a wfhost step plugin in JavaScript (world `step` of wit/plugin.wit).
// `with: { name: ... }` -> { "greeting": ... }
//
// Built by `npm run build` (componentize-js) with `--disable http fetch-event`:
// wfhost provides no wasi:http, which componentize-js imports by default.
import { log } from "wfhost:plugin/host@0.1.2";
import { greeting } from "./greeting.js";

const SCHEMA = {
  type: "object",
  required: ["name"],
  properties: {
    name: { type: "string", description: "Who to greet." },
    shout: { type: "boolean", description: "In capitals." },
  },
  additionalProperties: false,
};

export function describe() {
  return {
    name: "js-greet",
    version: "0.1.0",
    description: "Greets someone by name.",
    configSchema: JSON.stringify(SCHEMA),
  };
}

export function run(request) {
  const config = JSON.parse(request.config);
  if (typeof config.name !== "string") {
    // A thrown value is the result's error: `permanent` is not retried,
    // `transient` may be.
    throw { tag: "permanent", val: "`name` must be a string" };
  }
  log("info", `greeting ${config.name}`);
  return JSON.stringify({ greeting: greeting(config.name, Boolean(config.shout)) });
}
