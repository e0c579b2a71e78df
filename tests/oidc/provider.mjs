// Local OpenID Connect provider for AutoGit integration tests (oidc-provider 9.x).
//
// Usage:
//   node provider.mjs --port P --client-id ID --client-secret SECRET --redirect-uri URI
//                     [--kid KID] [--id-token-claims]
// Test hook: POST /__test__/id-token?mode=MODE (see below) breaks ID tokens.
//
// Observed flow (oidc-provider 9.13.3, Node 20.20.2; checked with curl, a fetch
// script and browser.mjs):
//   1. GET  /auth?client_id&response_type=code&redirect_uri&scope=openid profile email groups
//           &state&code_challenge&code_challenge_method=S256[&nonce]
//        -> 303 Location: /interaction/<uid>   (relative; sets _interaction + _interaction_resume)
//      Without code_challenge: 303 to redirect_uri?error=invalid_request
//        &error_description=Authorization Server policy requires PKCE ... (pkce.required below).
//      Unregistered redirect_uri: 400 error page, no redirect.
//   2. GET  /interaction/<uid> -> 200 dev login page: <form action="http://127.0.0.1:P/interaction/<uid>"
//        method="post"> with <input type=hidden name=prompt value=login>, <input name=login>,
//        <input type=password name=password>, <button type=submit>. The page's stylesheet links
//        https://fonts.googleapis.com (browser.mjs aborts every non-loopback request).
//   3. POST /interaction/<uid>  prompt=login&login=vera&password=<anything>
//        -> 303 Location: http://127.0.0.1:P/auth/<uid>
//   4. GET  /auth/<uid> -> 303 Location: <redirect_uri>?code=...&state=...&iss=http%3A%2F%2F127.0.0.1%3AP
//        No consent step (loadExistingGrant auto-grants). Sets _session/_session.sig on 127.0.0.1
//        (cookies are per host, not per port: the coordinator on 127.0.0.1 sees them too).
//        Unknown login -> <redirect_uri>?error=access_denied&error_description=unknown test account "x".
//   5. POST /token  Authorization: Basic base64(id:secret), grant_type=authorization_code, code,
//        redirect_uri, code_verifier -> 200 {access_token (opaque), expires_in: 3600, id_token,
//        scope, token_type: "Bearer"}. Wrong secret -> 401 invalid_client.
//        id_token header {alg: RS256, kid: <--kid>}; payload iss = "http://127.0.0.1:P" (no
//        trailing slash, same as discovery "issuer"), aud = client id, sub, iat, exp (+1h), nonce
//        only when sent (nonce is optional for the code flow); no auth_time/sid/at_hash.
//   6. GET  /me  Authorization: Bearer <access_token> -> {sub, name, preferred_username, email,
//        email_verified, groups}.
//   Default mode: the ID token carries only sub (+ protocol claims); profile/email/groups come
//   from userinfo. --id-token-claims: the ID token also carries the granted scopes' claims.
//   Other endpoints: /.well-known/openid-configuration, /jwks, /session/end.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    kid: { type: 'string', default: 'k1' },
    'id-token-claims': { type: 'boolean', default: false },
  },
  strict: true,
});

for (const required of ['port', 'client-id', 'client-secret', 'redirect-uri']) {
  if (!opts[required]) {
    process.stderr.write(`provider.mjs: missing --${required}\n`);
    process.exit(2);
  }
}

const PORT = Number.parseInt(opts.port, 10);
if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  process.stderr.write(`provider.mjs: bad --port ${opts.port}\n`);
  process.exit(2);
}
const ISSUER = `http://127.0.0.1:${PORT}`;
const CLIENT_ID = opts['client-id'];

// Test accounts: the login string is the account id and the `sub`.
const ACCOUNTS = {
  vera: { name: 'Vera Viewer', groups: ['ci-viewers'] },
  otto: { name: 'Otto Operator', groups: ['ci-operators'] },
  ada: { name: 'Ada Admin', groups: ['ci-admins'] },
  nobody: { name: 'No Body', groups: [] },
};

function findAccount(_ctx, id) {
  const account = Object.hasOwn(ACCOUNTS, id) ? ACCOUNTS[id] : undefined;
  if (!account) {
    // Unknown login: end the authorization with error=access_denied at the
    // redirect URI instead of a 500 page.
    throw new errors.AccessDenied(`unknown test account ${JSON.stringify(id)}`);
  }
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        name: account.name,
        preferred_username: id,
        email: `${id}@example.test`,
        email_verified: true,
        groups: [...account.groups],
      };
    },
  };
}

// Fresh RS256 signing key per process; restarting with another --kid rotates it.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: opts.kid,
  alg: 'RS256',
  use: 'sig',
};

// First-party auto-grant: whatever openid scopes/claims our single client asks
// for are granted, so no consent prompt is ever shown.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant;
  if (grantId) {
    grant = await oidc.provider.Grant.find(grantId);
  }
  if (oidc.client.clientId !== CLIENT_ID) {
    return grant;
  }
  if (!grant) {
    grant = new oidc.provider.Grant({
      clientId: oidc.client.clientId,
      accountId: oidc.session.accountId,
    });
  }
  const scopes = [...(oidc.requestParamScopes || [])];
  if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  const claims = [...(oidc.requestParamClaims || [])];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

const configuration = {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: opts['client-secret'],
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [opts['redirect-uri']],
    },
  ],
  jwks: { keys: [signingJwk] },
  findAccount,
  loadExistingGrant,
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  conformIdTokenClaims: !opts['id-token-claims'],
  // oidc-provider only requires PKCE for public clients by default; require
  // it (S256 is the only method v9 supports) for our confidential client too.
  pkce: { required: () => true },
  cookies: {
    keys: ['q7Lr3vX0tW9mZc2Kp8sYbN4hJ6fD1aGe', 'Vn5uT2xR8wQ0kM3zL7pC9bH4jF6sD1yA'],
  },
  features: {
    devInteractions: { enabled: true },
    userinfo: { enabled: true },
  },
  renderError(ctx, out, error) {
    process.stderr.write(`provider.mjs: renderError ${JSON.stringify(out)} ${error?.stack || error}\n`);
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><body><h1>oops</h1><pre id="error">${
      Object.entries(out).map(([k, v]) => `${k}: ${String(v).replace(/[<>&]/g, '')}`).join('\n')
    }</pre></body></html>`;
  },
};

const provider = new Provider(ISSUER, configuration);

// Test-only misbehaviour, so the coordinator's refusals can be observed end
// to end: `POST /__test__/id-token?mode=MODE` makes the token endpoint hand
// out broken ID tokens until the mode is set back to `honest`.
//   tampered        payload changed (sub → ada), original signature kept
//   foreign-key     signed by another key under the published kid
//   expired         exp an hour ago, signed with the real key
//   wrong-audience  aud "someone-else", signed with the real key
//   wrong-nonce     nonce not the one the client sent, signed with the real key
//   wrong-issuer    iss another URL, signed with the real key
const MODES = new Set(['honest', 'tampered', 'foreign-key', 'expired', 'wrong-audience', 'wrong-nonce', 'wrong-issuer']);
let idTokenMode = 'honest';
const { privateKey: foreignKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });

const b64url = (data) => Buffer.from(data).toString('base64url');

function signJwt(header, payload, key) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${crypto.sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

function misbehave(jwt, mode) {
  const [h, p, sig] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const payload = JSON.parse(Buffer.from(p, 'base64url'));
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'tampered':
      return `${h}.${b64url(JSON.stringify({ ...payload, sub: 'ada' }))}.${sig}`;
    case 'foreign-key':
      return signJwt(header, payload, foreignKey);
    case 'expired':
      return signJwt(header, { ...payload, iat: now - 7200, exp: now - 3600 }, privateKey);
    case 'wrong-audience':
      return signJwt(header, { ...payload, aud: 'someone-else' }, privateKey);
    case 'wrong-nonce':
      return signJwt(header, { ...payload, nonce: 'not-the-nonce-that-was-sent' }, privateKey);
    case 'wrong-issuer':
      return signJwt(header, { ...payload, iss: 'http://127.0.0.1:1' }, privateKey);
    default:
      return jwt;
  }
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test__/id-token' && ctx.method === 'POST') {
    const mode = String(ctx.query.mode || '');
    if (!MODES.has(mode)) {
      ctx.status = 400;
      ctx.body = { error: `unknown mode ${JSON.stringify(mode)}` };
      return;
    }
    idTokenMode = mode;
    ctx.body = { mode };
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && idTokenMode !== 'honest' && ctx.body?.id_token) {
    ctx.body = { ...ctx.body, id_token: misbehave(ctx.body.id_token, idTokenMode) };
  }
});

for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'introspection.error', 'end_session.error']) {
  provider.on(event, (_ctx, err) => {
    process.stderr.write(`provider.mjs: ${event}: ${err?.name}: ${err?.message}${err?.error_description ? ` (${err.error_description})` : ''}\n`);
  });
}

const server = http.createServer(provider.callback());
server.on('error', (err) => {
  process.stderr.write(`provider.mjs: listen error: ${err.stack || err}\n`);
  process.exit(1);
});
server.listen(PORT, '127.0.0.1', () => {
  process.stdout.write(`READY ${ISSUER}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
