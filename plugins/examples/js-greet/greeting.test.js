import { test } from "node:test";
import assert from "node:assert/strict";
import { greeting } from "./greeting.js";

test("greets and shouts", () => {
  assert.equal(greeting("Ada"), "Hello, Ada!");
  assert.equal(greeting("Ada", true), "HELLO, ADA!");
});
