// Drives the npm dicomweb-client (the OHIF viewer's DICOMweb client) through a plan of calls.
//
//   node matrix.mjs PLAN.json OUTDIR
//
// PLAN.json: {"url": "http://127.0.0.1:PORT/...", "calls": [{"id": "...", "method":
// "searchForStudies", "options": {...}, "datasets": ["/path/a.dcm", ...]}, ...]}.
// Each call runs in turn; binary answers (DICOM parts, frames, images) are written to
// OUTDIR/<id>-<n>.bin. Prints one JSON object on stdout: {id: result}, where a result is
// {"ok": true, "kind": "json", "value": ...} | {"ok": true, "kind": "parts", "files": [...]}
// | {"ok": true, "kind": "null"} | {"ok": false, "status": 406, "message": "..."}.
//
// The client is written for browsers and uses XMLHttpRequest, which Node.js lacks: the
// LoopbackXHR class below implements the part of it that the client uses on top of
// node:http, behaving as a browser does (a connection that ends before the body is complete
// is a network error: status 0, no response). It only talks to loopback addresses.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';

const LOOPBACK = new Set(['127.0.0.1', '[::1]', '::1', 'localhost']);

class LoopbackXHR {
  constructor() {
    this.readyState = 0;
    this.status = 0;
    this.response = null;
    this.responseType = '';
    this.withCredentials = false;
    this.requestHeaders = {};
    this.responseHeaders = {};
    this.done = false;
  }

  open(method, url) {
    this.method = method.toUpperCase();
    this.url = new URL(url);
    if (!LOOPBACK.has(this.url.hostname)) {
      throw new Error(`LoopbackXHR only connects to loopback addresses, not ${this.url.host}`);
    }
    this.readyState = 1;
  }

  setRequestHeader(name, value) {
    this.requestHeaders[name] = value;
  }

  getResponseHeader(name) {
    const value = this.responseHeaders[name.toLowerCase()];
    if (value === undefined) return null;
    return Array.isArray(value) ? value.join(', ') : String(value);
  }

  getAllResponseHeaders() {
    return Object.entries(this.responseHeaders)
      .map(([name, value]) => `${name}: ${value}`)
      .join('\r\n');
  }

  emit(name) {
    const handler = this[`on${name}`];
    if (typeof handler === 'function') handler.call(this, { target: this });
  }

  finish(body) {
    if (this.done) return;
    this.done = true;
    if (this.responseType === 'arraybuffer') {
      this.response = body.buffer.slice(body.byteOffset, body.byteOffset + body.length);
    } else if (this.responseType === 'json') {
      try {
        this.response = body.length ? JSON.parse(body.toString('utf8')) : null;
      } catch (error) {
        this.response = null;
      }
    } else {
      this.response = body.toString('utf8');
      this.responseText = this.response;
    }
    this.readyState = 4;
    this.emit('readystatechange');
    this.emit('load');
    this.emit('loadend');
  }

  fail() {
    if (this.done) return;
    this.done = true;
    this.status = 0;
    this.response = null;
    this.readyState = 4;
    this.emit('readystatechange');
    this.emit('error');
    this.emit('loadend');
  }

  send(body) {
    this.emit('loadstart');
    const request = http.request(this.url, { method: this.method, headers: this.requestHeaders },
      (response) => {
        this.status = response.statusCode;
        this.responseHeaders = response.headers;
        this.readyState = 2;
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('error', () => this.fail());
        response.on('close', () => {
          if (response.complete) this.finish(Buffer.concat(chunks));
          else this.fail();
        });
      });
    request.on('error', () => this.fail());
    if (body !== undefined && body !== null) {
      request.write(ArrayBuffer.isView(body) ? Buffer.from(body.buffer, body.byteOffset,
        body.byteLength) : Buffer.from(body));
    }
    request.end();
  }
}

function asBytes(value) {
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

async function run(plan, outdir) {
  globalThis.XMLHttpRequest = LoopbackXHR;
  const require = createRequire(import.meta.url);
  const { api } = require('dicomweb-client');
  const client = new api.DICOMwebClient({ url: plan.url });
  const results = {};
  for (const call of plan.calls) {
    const options = { ...(call.options || {}) };
    if (call.datasets) {
      options.datasets = call.datasets.map((file) => {
        const bytes = readFileSync(file);
        return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
      });
    }
    try {
      const value = await client[call.method](options);
      const parts = Array.isArray(value) && value.every((item) => asBytes(item) !== null)
        && !(call.method.startsWith('search') || call.method.endsWith('Metadata'))
        ? value : (asBytes(value) !== null ? [value] : null);
      if (parts !== null) {
        const files = parts.map((part, index) => {
          const file = path.join(outdir, `${call.id}-${index}.bin`);
          writeFileSync(file, asBytes(part));
          return file;
        });
        results[call.id] = { ok: true, kind: 'parts', files };
      } else if (value === null || value === undefined) {
        results[call.id] = { ok: true, kind: 'null' };
      } else {
        results[call.id] = { ok: true, kind: 'json', value };
      }
    } catch (error) {
      const body = error && error.response !== undefined ? error.response : null;
      results[call.id] = {
        ok: false,
        status: typeof error.status === 'number' ? error.status : null,
        message: String(error && error.message ? error.message : error),
        body: asBytes(body) !== null ? asBytes(body).toString('utf8') : body,
      };
    }
  }
  return results;
}

const [planFile, outdir] = process.argv.slice(2);
mkdirSync(outdir, { recursive: true });
const results = await run(JSON.parse(readFileSync(planFile, 'utf8')), outdir);
process.stdout.write(JSON.stringify(results));
