// Test OpenID provider for ciba-proxy integration tests. See README.md.
//
//   IDP_CLIENTS='[{"client_id":"c","client_secret":"s","redirect_uris":["http://127.0.0.1:9/cb"]}]' \
//     node server.mjs [--port N]
//
// stdout carries exactly one line: {"issuer":"http://127.0.0.1:PORT","port":PORT}.
// Everything else goes to stderr.
import http from 'node:http';
import querystring from 'node:querystring';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

// oidc-provider prints notices with console.info; keep stdout for the JSON line only.
console.log = console.info = console.warn = console.debug = console.error;
const { default: Provider, errors } = await import('oidc-provider');
// oidc-provider 9.13 gives every Provider instance its own small (LRU, 1000 entries) in-memory
// store. Share one bigger store so sessions, interactions, grants and tokens survive
// /_test/rotate-keys (which re-creates the Provider) and long test runs.
const { default: MemoryAdapter } = await import('oidc-provider/lib/adapters/memory_adapter.js');
const { default: LRU } = await import('oidc-provider/lib/helpers/lru.js');
const store = new LRU({ maxSize: 100_000 });
const adapter = (model) => new MemoryAdapter(model, store, 15);

const { values: args } = parseArgs({ options: { port: { type: 'string', default: '0' } } });

const clients = JSON.parse(process.env.IDP_CLIENTS || '[]').map((c) => ({
  client_id: c.client_id,
  client_secret: c.client_secret,
  redirect_uris: c.redirect_uris,
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  // Either client_secret_basic or client_secret_post is accepted for this value.
  token_endpoint_auth_method: 'client_secret_basic',
}));

// Signs cookies; shared by every Provider instance so rotation keeps sessions valid.
const cookieKeys = [randomBytes(32).toString('base64url')];

function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: randomBytes(12).toString('base64url'), alg: 'RS256', use: 'sig' };
}

// CIBA Core §10.1.1's claim; oidc-provider never sets it itself.
const AUTH_REQ_ID_CLAIM = 'urn:openid:params:jwt:claim:auth_req_id';

async function findAccount(ctx, id) {
  // A CIBA token call's ID token carries what the approve hook's
  // `id_token_claims` asked for (e.g. AUTH_REQ_ID_CLAIM).
  let extra = {};
  try {
    extra = cibaRequests.get(ctx?.oidc?.body?.auth_req_id)?.idTokenClaims ?? {};
  } catch {}
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        preferred_username: id,
        email: `${id}@example.test`,
        email_verified: true,
        name: id,
        ...extra,
      };
    },
  };
}

// ---- CIBA (OpenID Connect CIBA Core 1.0) ------------------------------------------------
// The simulated authentication device: every backchannel request the IdP accepts waits here
// until a test approves or denies it through /_test/ciba/{id}/approve|deny.
const cibaRequests = new Map(); // auth_req_id -> entry (see entryJson)
const cibaAttempts = []; // every POST /backchannel, accepted or not
const pings = []; // every ping notification oidc-provider attempted
const revocations = []; // every POST /token/revocation
let tokenCalls = []; // every POST /token: {at_ms, grant_type, auth_req_id, status, error}
const slowDowns = new Map(); // auth_req_id -> how many more token calls answer slow_down

const ACCOUNT_FROM_JSON_HINT = 'username'; // Glewlwyd's login_hint shape: {"username":"alice"}

function accountFromHint(hint, what) {
  let id = hint;
  if (typeof hint === 'string' && hint.trimStart().startsWith('{')) {
    try {
      id = JSON.parse(hint)?.[ACCOUNT_FROM_JSON_HINT];
    } catch {
      id = undefined;
    }
  }
  if (typeof id !== 'string' || !id || id.startsWith('unknown')) {
    throw new errors.UnknownUserId(`no end-user matches this ${what}`);
  }
  // Magic accounts for the IdP's other refusals of a backchannel request.
  if (id.startsWith('denied')) throw new errors.AccessDenied(`${id} may not sign in here`);
  if (id.startsWith('badscope')) throw new errors.InvalidScope(`${id} may not have this scope`);
  if (id.startsWith('unauthorized')) {
    throw new errors.UnauthorizedClient('this client may not use CIBA for this user');
  }
  return id;
}

function withoutSecrets(form) {
  const copy = { ...form };
  delete copy.client_secret;
  return copy;
}

const ciba = {
  enabled: true,
  deliveryModes: ['poll', 'ping'],
  // login_hint: the account id itself, or JSON {"username":"<account id>"}.
  // Anything starting with "unknown" is nobody: unknown_user_id.
  async processLoginHint(ctx, loginHint) {
    return accountFromHint(loginHint, 'login_hint');
  },
  // login_hint_token: a JWT whose (unverified) payload names the account in `sub` or
  // `username` (expired `exp` gives expired_login_hint_token); any other string is taken
  // as the account id, like login_hint.
  async processLoginHintToken(ctx, token) {
    const parts = token.split('.');
    if (parts.length !== 3) return accountFromHint(token, 'login_hint_token');
    let payload;
    try {
      payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    } catch {
      throw new errors.InvalidRequest('login_hint_token is not a readable JWT');
    }
    if (typeof payload?.exp === 'number' && payload.exp < Date.now() / 1000) {
      throw new errors.ExpiredLoginHintToken('login_hint_token has expired');
    }
    return accountFromHint(payload?.sub ?? payload?.username, 'login_hint_token');
  },
  // user_code: any value passes, except the literal "wrong" (invalid_user_code).
  async verifyUserCode(ctx, account, userCode) {
    if (userCode === 'wrong') throw new errors.InvalidUserCode('user_code is wrong');
  },
  async validateRequestContext() {},
  // validateBindingMessage: oidc-provider's default (^[a-zA-Z0-9-._+/!?#]{1,20}$).
  async triggerAuthenticationDevice(ctx, request, account, client) {
    cibaRequests.set(request.jti, {
      request,
      account: account.accountId,
      clientId: client.clientId,
      form: rawForm(ctx),
      status: 'pending',
      createdAt: Date.now(),
      expiresAt: Math.floor(Date.now() / 1000) + request.expiration,
    });
  },
};

// Every outgoing request oidc-provider makes goes through here. Its own dispatcher refuses
// special-use addresses (127.0.0.0/8 included) to stop SSRF, which would make every ping to
// a test server on loopback fail; dropping it uses Node's global dispatcher instead, which
// trusts NODE_EXTRA_CA_CERTS. CIBA pings are recorded for GET /_test/pings.
async function outgoingFetch(url, options) {
  delete options.dispatcher;
  let entry;
  let body;
  try {
    body = typeof options.body === 'string' ? JSON.parse(options.body) : undefined;
  } catch {}
  if (options.method === 'POST' && body && typeof body.auth_req_id === 'string') {
    entry = {
      url: String(url),
      authorization: options.headers?.get?.('authorization') ?? null,
      content_type: options.headers?.get?.('content-type') ?? null,
      body,
      at_ms: Date.now(),
      status: null,
      error: null,
    };
    pings.push(entry);
  }
  try {
    const response = await globalThis.fetch(url, options);
    if (entry) entry.status = response.status;
    return response;
  } catch (err) {
    if (entry) entry.error = String(err?.cause?.message || err?.message || err);
    throw err;
  }
}

// The form exactly as the client sent it (oidc-provider adds client_id to its own copy).
function rawForm(ctx) {
  return ctx.state.rawForm ?? withoutSecrets(ctx.oidc.body || {});
}

// Keeps a copy of the raw /backchannel form, then records /backchannel and /token/revocation
// calls once oidc-provider has answered them.
async function recordCalls(ctx, next) {
  if (ctx.method === 'POST' && ['/backchannel', '/token'].includes(ctx.path) && ctx.req.readable) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    // oidc-provider's body parser takes an already-read body from req.body.
    ctx.req.body = body;
    if (ctx.is('application/x-www-form-urlencoded')) {
      ctx.state.rawForm = withoutSecrets(querystring.parse(body.toString()));
    }
  }
  if (ctx.method === 'POST' && ctx.path === '/token') return tokenCall(ctx, next);
  await next();
  let route;
  try {
    route = ctx.oidc?.route;
  } catch {
    return;
  }
  if (route === 'backchannel_authentication') {
    const body = ctx.body && typeof ctx.body === 'object' ? ctx.body : {};
    // WSO2 IS's external channel: the caller must bring the user to auth_url.
    if (ctx.status === 200 && body.auth_req_id && rawForm(ctx).notification_channel === 'external') {
      ctx.body = { ...body, auth_url: `${issuer}/_test/ciba/auth/${encodeURIComponent(body.auth_req_id)}` };
    }
    cibaAttempts.push({
      form: rawForm(ctx),
      client_id: ctx.oidc.client?.clientId ?? null,
      status: ctx.status,
      error: body.error ?? null,
      error_description: body.error_description ?? null,
      auth_req_id: body.auth_req_id ?? null,
      at_ms: Date.now(),
    });
  } else if (route === 'revocation') {
    const token = ctx.oidc.body?.token;
    let kind = null;
    if (ctx.oidc.entities?.AccessToken) kind = 'AccessToken';
    else if (ctx.oidc.entities?.RefreshToken) kind = 'RefreshToken';
    else if (ctx.oidc.entities?.ClientCredentials) kind = 'ClientCredentials';
    revocations.push({
      client_id: ctx.oidc.client?.clientId ?? null,
      token: typeof token === 'string' ? token : null,
      token_type_hint: ctx.oidc.body?.token_type_hint ?? null,
      kind,
      status: ctx.status,
      at_ms: Date.now(),
    });
  }
}

// Records a POST /token; answers slow_down instead of oidc-provider while the
// slow_down hook asks for it (oidc-provider's own CIBA grant never does).
async function tokenCall(ctx, next) {
  const form = ctx.state.rawForm ?? {};
  const call = {
    at_ms: Date.now(),
    grant_type: form.grant_type ?? null,
    auth_req_id: form.auth_req_id ?? null,
    status: null,
    error: null,
  };
  tokenCalls.push(call);
  const left = slowDowns.get(call.auth_req_id) ?? 0;
  if (left > 0) {
    slowDowns.set(call.auth_req_id, left - 1);
    ctx.status = 400;
    ctx.set('cache-control', 'no-store');
    ctx.body = { error: 'slow_down', error_description: 'you are polling too fast' };
  } else {
    await next();
  }
  call.status = ctx.status;
  call.error = ctx.body && typeof ctx.body === 'object' ? (ctx.body.error ?? null) : null;
}

function makeProvider(issuer, jwk) {
  const provider = new Provider(issuer, {
    adapter,
    clients,
    jwks: { keys: [jwk] },
    findAccount,
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    claims: {
      openid: ['sub', AUTH_REQ_ID_CLAIM],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
    },
    // Put scope-derived claims in the ID token too (not only at /me).
    conformIdTokenClaims: false,
    pkce: { required: () => true }, // oidc-provider 9 only supports S256
    ttl: { AccessToken: 300, IdToken: 300, AuthorizationCode: 60, Interaction: 600 },
    // Plain http on 127.0.0.1: cookies are never `secure` here (default secure only follows ctx.secure).
    cookies: { keys: cookieKeys },
    // Open dynamic client registration (RFC 7591) at /reg: each test registers an
    // upstream client whose redirect URI is its own proxy's callback.
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true },
      ciba,
      // RFC 7009 at /token/revocation (revocation_endpoint in discovery).
      revocation: { enabled: true },
    },
    fetch: outgoingFetch,
    enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
  });
  provider.use(recordCalls);
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider;
}

// ---- test hooks ---------------------------------------------------------------------
let counts = {};
let total = 0;
let handler;
let provider;
let issuer;
let kid;
// Outage: until this time (ms since the epoch) every non-/_test/ request loses its socket.
let outageUntil = 0;
// POST /token is answered this many ms late (0: at once), e.g. to stall the
// proxy's store while an exchange is in flight.
let tokenDelayMs = 0;
// A hanging outage reads each request, counts it, and never answers: the
// connection is cut when the outage ends.
let outageHangs = false;
let dropped = {};

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString();
  if (!text.trim()) return {};
  const value = JSON.parse(text);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error('the body must be a JSON object');
  }
  return value;
}

function rotate() {
  const jwk = newSigningKey();
  // A new Provider with the same issuer, clients, cookie keys and shared store; swap the handler.
  provider = makeProvider(issuer, jwk);
  handler = provider.callback();
  kid = jwk.kid;
  console.error(`signing key kid=${kid}`);
}

// pending | approved | denied | expired (never answered before it expired)
function statusOf(e) {
  if (e.status === 'pending' && Date.now() / 1000 >= e.expiresAt) return 'expired';
  return e.status;
}

function entryJson(id, e) {
  const { request } = e;
  const p = request.params || {};
  const num = (v) => (v === undefined || v === null || v === '' ? null : Number(v));
  return {
    id,
    status: statusOf(e),
    account: e.account,
    approved_as: e.approvedAs ?? null,
    client_id: e.clientId,
    login_hint: p.login_hint ?? null,
    login_hint_token: p.login_hint_token ?? null,
    id_token_hint: p.id_token_hint ?? null,
    binding_message: p.binding_message ?? null,
    user_code: p.user_code ?? null,
    request_context: p.request_context ?? null,
    client_notification_token: p.client_notification_token ?? null,
    scope: request.scope ?? null,
    acr_values: p.acr_values ?? null,
    requested_expiry: num(p.requested_expiry),
    claims: request.claims ?? null,
    nonce: request.nonce ?? null,
    expires_at: e.expiresAt,
    created_at_ms: e.createdAt,
    form: e.form,
    params: p,
  };
}

function scopesToGrant(request, asked) {
  const requested = (request.scope || '').split(' ').filter(Boolean);
  if (asked === undefined) return requested;
  const wanted = new Set(String(asked).split(' ').filter(Boolean));
  return requested.filter((s) => wanted.has(s));
}

// POST /_test/ciba/{id}/approve|deny
async function resolveCiba(res, id, action, body) {
  const e = cibaRequests.get(id);
  const request = await provider.BackchannelAuthenticationRequest.find(id, {
    ignoreExpiration: true,
  });
  if (!e || !request) return json(res, 404, { error: 'not_found', error_description: `no CIBA request ${id}` });
  if (statusOf(e) === 'expired' || request.isExpired) {
    return json(res, 409, { error: 'expired', status: 'expired' });
  }
  if (e.status !== 'pending' || request.grantId || request.error) {
    return json(res, 409, { error: 'already_resolved', status: e.status });
  }
  let result;
  let options = {};
  if (action === 'approve') {
    // The approving account; "as" makes someone else approve (the wrong person). The CIBA
    // grant issues tokens for request.accountId, and backchannelResult insists the Grant's
    // accountId matches it, so both change.
    const accountId = body.as ?? request.accountId;
    if (typeof accountId !== 'string' || !accountId) return json(res, 400, { error: 'bad "as"' });
    request.accountId = accountId;
    const grant = new provider.Grant({ accountId, clientId: request.clientId });
    grant.addOIDCScope(scopesToGrant(request, body.scope).join(' '));
    for (const use of ['id_token', 'userinfo']) {
      const claims = Object.keys(request.claims?.[use] || {});
      if (claims.length) grant.addOIDCClaims(claims);
    }
    await grant.save();
    result = grant;
    options = { authTime: Math.floor(Date.now() / 1000) };
    e.approvedAs = accountId;
    // {"id_token_claims": {...}}; "$auth_req_id" stands for this request's id.
    if (body.id_token_claims && typeof body.id_token_claims === 'object') {
      e.idTokenClaims = Object.fromEntries(
        Object.entries(body.id_token_claims).map(([k, v]) => [k, v === '$auth_req_id' ? id : v]),
      );
    }
  } else {
    const error = body.error || 'access_denied';
    const description = body.error_description || 'End-User denied the authorization request';
    result = new errors.CustomOIDCProviderError(error, description);
    // backchannelResult copies error_description, but the model only stores errorDescription;
    // without this the token endpoint's error would have no description.
    request.errorDescription = description;
  }
  e.status = action === 'approve' ? 'approved' : 'denied';
  const reply = {};
  try {
    await provider.backchannelResult(request, result, options);
  } catch (err) {
    // The outcome is saved before a ping is sent; only the ping failed.
    if (!request.grantId && !request.error) {
      e.status = 'pending';
      return json(res, 500, { error: 'server_error', error_description: String(err?.message || err) });
    }
    reply.ping_error = String(err?.cause?.message || err?.message || err);
  }
  return json(res, 200, reply);
}

async function tokenStatus(token) {
  for (const model of [provider.AccessToken, provider.RefreshToken, provider.ClientCredentials]) {
    const found = await model.find(token);
    if (found) {
      return { kind: found.kind, active: found.consumed ? false : !found.isExpired };
    }
  }
  return { kind: null, active: false };
}

async function testHook(req, res, path) {
  const route = `${req.method} ${path}`;
  if (route === 'GET /_test/stats') {
    return json(res, 200, { total, requests: counts, token_calls: tokenCalls });
  }
  if (route === 'POST /_test/reset') {
    counts = {};
    total = 0;
    tokenCalls = [];
    return json(res, 200, { total, requests: counts, token_calls: tokenCalls });
  }
  if (route === 'POST /_test/rotate-keys') {
    rotate();
    return json(res, 200, { kid });
  }
  if (route === 'GET /_test/ciba/requests') {
    const all = new URLSearchParams(req.url.split('?')[1] || '').has('all');
    const list = [...cibaRequests.entries()]
      .filter(([, e]) => all || statusOf(e) === 'pending')
      .map(([id, e]) => entryJson(id, e));
    return json(res, 200, list);
  }
  if (route === 'GET /_test/ciba/attempts') return json(res, 200, cibaAttempts);
  const slow = /^POST \/_test\/ciba\/([^/]+)\/slow_down$/.exec(route);
  if (slow) {
    const { times = 1 } = await readJson(req);
    if (!Number.isInteger(times) || times < 0) return json(res, 400, { error: 'times must be an integer >= 0' });
    slowDowns.set(decodeURIComponent(slow[1]), times);
    return json(res, 200, {});
  }
  const resolve = /^POST \/_test\/ciba\/([^/]+)\/(approve|deny)$/.exec(route);
  if (resolve) {
    return resolveCiba(res, decodeURIComponent(resolve[1]), resolve[2], await readJson(req));
  }
  if (route === 'GET /_test/pings') return json(res, 200, pings);
  if (route === 'GET /_test/revocations') return json(res, 200, revocations);
  if (route === 'POST /_test/token-status') {
    const { token } = await readJson(req);
    if (typeof token !== 'string') return json(res, 400, { error: 'token must be a string' });
    return json(res, 200, await tokenStatus(token));
  }
  if (route === 'POST /_test/outage') {
    const { ms, refuse, hang } = await readJson(req);
    if (!Number.isFinite(ms) || ms < 0) return json(res, 400, { error: 'ms must be a number >= 0' });
    if (refuse && ms > 0) {
      // A stopped IdP: nothing listens, so connections are refused (and open
      // ones are cut), until the port is opened again. The hooks are
      // unreachable meanwhile too.
      // Stop listening and cut every other connection before answering, so
      // that nothing reaches the IdP once the caller has heard the answer.
      server.close();
      for (const socket of sockets) if (socket !== req.socket) socket.destroy();
      setTimeout(() => server.listen(Number(new URL(issuer).port), '127.0.0.1'), ms);
      res.on('finish', () => req.socket.destroy());
      json(res, 200, { until_ms: Date.now() + ms });
      return undefined;
    }
    outageUntil = ms > 0 ? Date.now() + ms : 0;
    outageHangs = Boolean(hang);
    if (ms > 0) dropped = {};
    return json(res, 200, { until_ms: outageUntil });
  }
  if (route === 'POST /_test/token-delay') {
    const { ms } = await readJson(req);
    if (!Number.isFinite(ms) || ms < 0) return json(res, 400, { error: 'ms must be a number >= 0' });
    tokenDelayMs = ms;
    return json(res, 200, { ms });
  }
  if (route === 'GET /_test/outage') {
    return json(res, 200, {
      active: Date.now() < outageUntil,
      until_ms: outageUntil,
      dropped,
    });
  }
  return json(res, 404, { error: 'not_found' });
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path.startsWith('/_test/')) {
    testHook(req, res, path).catch((err) => {
      console.error('test hook failed', err);
      if (!res.headersSent) json(res, 500, { error: 'hook_failed', error_description: String(err?.message || err) });
    });
    return undefined;
  }
  if (Date.now() < outageUntil && outageHangs) {
    const key = `${req.method} ${path}`;
    counts[key] = (counts[key] || 0) + 1;
    total += 1;
    req.resume();
    setTimeout(() => req.socket.destroy(), outageUntil - Date.now());
    return undefined;
  }
  if (Date.now() < outageUntil) {
    // An unreachable IdP: no status line, the connection just goes away. Not counted in stats.
    const key = `${req.method} ${path}`;
    dropped[key] = (dropped[key] || 0) + 1;
    req.socket.destroy();
    return undefined;
  }
  const key = `${req.method} ${path}`;
  counts[key] = (counts[key] || 0) + 1;
  total += 1;
  if (key === 'POST /token' && tokenDelayMs > 0) {
    setTimeout(() => handler(req, res), tokenDelayMs);
    return undefined;
  }
  return handler(req, res);
});

// Every open connection, so a refusing outage can cut them.
const sockets = new Set();
server.on('connection', (socket) => {
  sockets.add(socket);
  socket.on('close', () => sockets.delete(socket));
});

server.listen(Number(args.port), '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  rotate();
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

// ---- lifetime: die with the parent ---------------------------------------------------
function shutdown(why) {
  console.error(`test idp exiting (${why})`);
  process.exit(0);
}
process.stdin.on('end', () => shutdown('stdin end'));
process.stdin.on('close', () => shutdown('stdin close'));
process.stdin.on('error', () => shutdown('stdin error'));
process.stdin.resume();
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
