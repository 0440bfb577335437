// Test OpenID provider for ciba-proxy integration tests. See README.md.
//
//   IDP_CLIENTS='[{"client_id":"c","client_secret":"s","redirect_uris":["http://127.0.0.1:9/cb"]}]' \
//     node server.mjs [--port N]
//
// stdout carries exactly one line: {"issuer":"http://127.0.0.1:PORT","port":PORT}.
// Everything else goes to stderr.
import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

// oidc-provider prints notices with console.info; keep stdout for the JSON line only.
console.log = console.info = console.warn = console.debug = console.error;
const { default: Provider } = await import('oidc-provider');
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

async function findAccount(ctx, id) {
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        preferred_username: id,
        email: `${id}@example.test`,
        email_verified: true,
        name: id,
      };
    },
  };
}

function makeProvider(issuer, jwk) {
  const provider = new Provider(issuer, {
    adapter,
    clients,
    jwks: { keys: [jwk] },
    findAccount,
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    claims: {
      openid: ['sub'],
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
    features: { devInteractions: { enabled: true }, registration: { enabled: true } },
    enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider;
}

// ---- test hooks ---------------------------------------------------------------------
let counts = {};
let total = 0;
let handler;
let issuer;
let kid;

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

function rotate() {
  const jwk = newSigningKey();
  // A new Provider with the same issuer, clients, cookie keys and shared store; swap the handler.
  handler = makeProvider(issuer, jwk).callback();
  kid = jwk.kid;
  console.error(`signing key kid=${kid}`);
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path.startsWith('/_test/')) {
    const route = `${req.method} ${path}`;
    if (route === 'GET /_test/stats') return json(res, 200, { total, requests: counts });
    if (route === 'POST /_test/reset') {
      counts = {};
      total = 0;
      return json(res, 200, { total, requests: counts });
    }
    if (route === 'POST /_test/rotate-keys') {
      rotate();
      return json(res, 200, { kid });
    }
    return json(res, 404, { error: 'not_found' });
  }
  const key = `${req.method} ${path}`;
  counts[key] = (counts[key] || 0) + 1;
  total += 1;
  return handler(req, res);
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
