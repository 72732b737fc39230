'use strict';
// The sandbox's Node worker, run inside its bubblewrap jail after boot.py set its limits.
// It runs one code node's main() and exits: Dify's semantics, main receives an object of
// the node's variables and returns an object (or a promise of one).
// argv: reply fd, largest reply in bytes, most characters of printed output kept.
// Protocol: one JSON request line on stdin; replies on the reply fd as a length line and
// that many bytes of JSON: first {"ready": true}, then the run's reply.

const fs = require('fs');
const util = require('util');
const vm = require('vm');

const replyFd = Number(process.argv[2]);
const maxReply = Number(process.argv[3]);
const maxStdout = Number(process.argv[4]);
const FILENAME = '<code>';

function send(body) {
  const bytes = Buffer.from(body);
  const framed = Buffer.concat([Buffer.from(`${bytes.length}\n`), bytes]);
  let offset = 0;
  while (offset < framed.length) offset += fs.writeSync(replyFd, framed, offset);
}

function readLine() {
  const chunks = [];
  const buffer = Buffer.alloc(1 << 16);
  for (;;) {
    const n = fs.readSync(0, buffer, 0, buffer.length, null);
    if (n === 0) break;
    const chunk = Buffer.from(buffer.subarray(0, n));
    chunks.push(chunk);
    if (chunk.includes(10)) break;
  }
  return Buffer.concat(chunks).toString('utf8');
}

// What the code prints is kept for the reply, never written to a descriptor.
let printed = '';
function capture(...args) {
  printed += util.format(...args) + '\n';
}
for (const name of ['log', 'info', 'debug', 'warn', 'error', 'trace']) console[name] = capture;
for (const stream of [process.stdout, process.stderr]) {
  stream.write = (chunk) => {
    printed += String(chunk);
    return true;
  };
}

function failure(error, code, when) {
  const isError = error instanceof Error;
  const name = isError ? error.name : typeof error;
  const text = isError ? error.message : String(error);
  const detail = text ? `${name}: ${text}` : name;
  const stack = isError && typeof error.stack === 'string' ? error.stack : '';
  if (error instanceof SyntaxError && when === 'while loading the code') {
    const at = /^<code>:(\d+)/.exec(stack);
    // Past the code's last line is the line this worker appends: the code ended early.
    const line = at ? Math.min(Number(at[1]), code.split('\n').length) : null;
    return {ok: false, message: `syntax error${line ? ` on line ${line}` : ''}: ${text}`,
            field: 'code', hint: 'fix the JavaScript syntax', error_type: 'SyntaxError'};
  }
  const frame = /at (?:(\S+) \()?<code>:(\d+):\d+/.exec(stack);
  if (!frame) {
    return {ok: false, message: `${detail} (${when})`, field: 'code', hint: '',
            error_type: name};
  }
  const line = Number(frame[2]);
  const source = (code.split('\n')[line - 1] || '').trim();
  const where = `line ${line}, in ${frame[1] || '<module>'}` + (source ? `: ${source}` : '');
  return {ok: false, message: `${detail} (${where})`, field: 'code',
          hint: 'fix the code at that line', error_type: name};
}

function kindOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

// As in a script node runs (Dify's runner), the code may require() modules.
globalThis.require = require;

async function run(request) {
  const code = request.code;
  let main;
  try {
    // The script's last value is main, declared however the code declares it.
    const script = new vm.Script(`${code}\n;typeof main === 'function' ? main : undefined`,
                                 {filename: FILENAME});
    main = script.runInThisContext();
  } catch (error) {
    return failure(error, code, 'while loading the code');
  }
  if (typeof main !== 'function') {
    return {ok: false, message: 'the code defines no main() function', field: 'code',
            hint: 'define function main({arg1}) { return {result: arg1} }'};
  }
  let outputs;
  try {
    outputs = await main(request.inputs);
  } catch (error) {
    return failure(error, code, 'in main()');
  }
  if (outputs === null || typeof outputs !== 'object' || Array.isArray(outputs)) {
    return {ok: false, message: `main() returned ${kindOf(outputs)}, not an object`,
            field: 'code', hint: 'return an object, e.g. return {result: value}'};
  }
  return {ok: true, outputs};
}

function encode(reply) {
  reply.stdout = printed.length <= maxStdout ? printed
    : `${printed.slice(0, maxStdout)}\n[${printed.length - maxStdout} more characters not kept]`;
  let body;
  try {
    body = JSON.stringify(reply);
  } catch (error) {
    body = JSON.stringify({ok: false, message: `main() returned a value that is not JSON: ${
      error.message}`, field: 'code', hint: 'return strings, numbers, booleans, arrays and objects',
                           error_type: 'OutputNotJSON', stdout: reply.stdout});
  }
  const size = Buffer.byteLength(body);
  return size > maxReply ? JSON.stringify({ok: false, too_large: size}) : body;
}

async function serve() {
  send('{"ready": true}');
  const request = JSON.parse(readLine());
  let reply;
  try {
    reply = await run(request);
  } catch (error) {
    reply = failure(error, request.code, 'in main()');
  }
  send(encode(reply));
  process.exit(0);
}

serve();
