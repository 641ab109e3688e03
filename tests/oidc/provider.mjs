// A real OIDC provider for shipyard's gateway tests, set up like Dex:
// issuer http://127.0.0.1:<port>/dex, RS256 keys, claims email/email_verified/groups/name,
// static users with passwords behind a plain HTML login form, a confidential client
// "shipyard" and a public native client "shipyard-cli" (loopback redirects, RFC 8252).
//
// Admin endpoints (loopback only, test use):
//   POST /admin/rotate  -> new RS256 signing key; old keys stay published (like Dex).
//
// Environment: OIDC_PORT (required), OIDC_REDIRECT_URIS (comma-separated, for "shipyard"),
// OIDC_CLIENT_SECRET (default "shipyard-secret").
import crypto from 'node:crypto';
import http from 'node:http';
import querystring from 'node:querystring';

import Provider from 'oidc-provider';
// The provider has no public API to swap keys at run time; re-running its own keystore
// initializer on the live instance rotates keys while sessions and grants stay valid.
import initializeKeystore from './node_modules/oidc-provider/lib/helpers/initialize_keystore.js';

const port = Number(process.env.OIDC_PORT || '0');
const issuer = `http://127.0.0.1:${port}/dex`;
const redirectUris = (process.env.OIDC_REDIRECT_URIS || 'http://127.0.0.1/callback')
  .split(',').filter(Boolean);
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'shipyard-secret';

const USERS = {
  'user@example.com': { password: 'password', name: 'Example User', groups: ['ml-team'] },
  'second@example.com': { password: 'password', name: 'Second User', groups: ['other-team'] },
  'admin@example.com': { password: 'password', name: 'Admin User', groups: ['platform-admins'] },
};

function subjectFor(email) {
  // Dex's sub is opaque; mimic that so the gateway must key users on the email claim.
  return Buffer.from(`local:${email}`).toString('base64url');
}

const accountsBySub = Object.fromEntries(Object.keys(USERS).map((e) => [subjectFor(e), e]));

function newKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
}

const keys = [newKey()];
const cookieKeys = [crypto.randomBytes(32).toString('hex')];

function buildProvider() {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'shipyard',
        client_secret: clientSecret,
        redirect_uris: redirectUris,
        post_logout_redirect_uris: redirectUris.map((u) => new URL('/', u).href),
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'shipyard-cli',
        application_type: 'native',
        redirect_uris: ['http://127.0.0.1/callback'],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      },
    ],
    jwks: { keys },
    cookies: { keys: cookieKeys },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
      profile: ['name', 'preferred_username'],
    },
    scopes: ['openid', 'offline_access', 'email', 'groups', 'profile'],
    conformIdTokenClaims: false, // put email/groups into the ID token, as Dex does
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
    },
    pkce: { required: () => true },
    ttl: { IdToken: 3600, AccessToken: 3600, RefreshToken: 86400, Session: 86400 },
    interactions: { url: (_ctx, interaction) => `/dex/interaction/${interaction.uid}` },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    findAccount: async (_ctx, sub) => {
      const email = accountsBySub[sub];
      if (!email) return undefined;
      const u = USERS[email];
      return {
        accountId: sub,
        claims: async () => ({
          sub, email, email_verified: true, groups: u.groups, name: u.name,
          preferred_username: email.split('@')[0],
        }),
      };
    },
    // First-party clients: grant every requested scope without a consent page.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const existing = await ctx.oidc.provider.Grant.find(grantId);
        if (existing) return existing;
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email groups profile offline_access');
      grant.addOIDCClaims(['email', 'email_verified', 'groups', 'name', 'preferred_username']);
      await grant.save();
      return grant;
    },
  });
  provider.proxy = false;
  return provider;
}

const provider = buildProvider();

function loginPage(uid, error) {
  const err = error ? `<p class="error">${error}</p>` : '';
  return `<!doctype html><html><head><title>Log in</title></head><body>
<h1>Log in to Your Account</h1>${err}
<form method="post" action="/dex/interaction/${uid}">
<label>Email <input id="login" name="login" type="text" autofocus></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit-login" type="submit">Login</button>
</form></body></html>`;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => {
      data += c;
      if (data.length > 65536) reject(new Error('body too large'));
    });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

async function handleInteraction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (details.prompt.name === 'consent') {
    // Native (public) clients always get a consent prompt; first-party, so grant it.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope('openid email groups profile offline_access');
    grant.addOIDCClaims(['email', 'email_verified', 'groups', 'name', 'preferred_username']);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } },
      { mergeWithLastSubmission: true });
    return;
  }
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginPage(uid));
    return;
  }
  const form = querystring.parse(await readBody(req));
  const user = USERS[String(form.login || '')];
  if (!user || user.password !== String(form.password || '')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginPage(uid, 'Invalid Email Address and password.'));
    return;
  }
  const result = { login: { accountId: subjectFor(String(form.login)) } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname === '/admin/rotate' && req.method === 'POST') {
      keys.unshift(newKey());
      keys.splice(5); // keep the current key and a few retired ones published
      initializeKeystore.call(provider, { keys });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kid: keys[0].kid }));
      return;
    }
    const m = url.pathname.match(/^\/dex\/interaction\/([A-Za-z0-9_-]+)$/);
    if (m) {
      await handleInteraction(req, res, m[1]);
      return;
    }
    if (url.pathname === '/dex' || url.pathname.startsWith('/dex/')) {
      req.originalUrl = req.url;
      req.url = req.url.slice(4) || '/';
      provider.callback()(req, res);
      return;
    }
    res.writeHead(404);
    res.end('not found');
  } catch (err) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err && err.message));
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
