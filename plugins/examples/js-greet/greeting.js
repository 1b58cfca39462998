// What the step computes, apart from the plugin glue (see greeting.test.js).
export function greeting(name, shout = false) {
  const text = `Hello, ${name}!`;
  return shout ? text.toUpperCase() : text;
}
