// A real OpenID provider (panva's oidc-provider) for the web app's sign-in tests, on loopback only.
//
// Settings come from the environment:
//   OIDC_PORT              port to listen on (127.0.0.1)
//   OIDC_CLIENT_ID         the web app's client id (client_secret_basic, PKCE required)
//   OIDC_CLIENT_SECRET     its secret
//   OIDC_REDIRECT_URI      its one redirect URI (the web app's /auth/callback)
//   OIDC_POST_LOGOUT_URI   where the provider may send someone after signing out
//   OIDC_ACCOUNTS          JSON: {"<sub>": {"name": "...", "org": "...", "scopes": ["invoices:validate"]}}
//
// Signing in uses oidc-provider's development login form (any password; the login is the account's
// sub). Consent is the provider's decision, as at an organisation's identity provider: each account
// is granted openid, profile and org, plus the role scopes it holds, and refused every other scope
// the app asks for, so what the token response grants is what the test gave the account.
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const ROLE_SCOPES = ['invoices:submit', 'invoices:validate', 'invoices:read', 'reports:read', 'audit:read'];
const ALWAYS_GRANTED = ['openid', 'profile', 'org'];

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('OIDC_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const accounts = JSON.parse(required('OIDC_ACCOUNTS'));

// A signing key made for this run, so no key is ever committed.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `test-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };

const configuration = {
  clients: [
    {
      client_id: required('OIDC_CLIENT_ID'),
      client_secret: required('OIDC_CLIENT_SECRET'),
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: [required('OIDC_REDIRECT_URI')],
      post_logout_redirect_uris: [required('OIDC_POST_LOGOUT_URI')],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'profile', 'org', ...ROLE_SCOPES],
  claims: { openid: ['sub'], profile: ['name'], org: ['org'] },
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(ctx, sub) {
    const account = accounts[sub];
    if (!account) {
      return undefined;
    }
    return {
      accountId: sub,
      async claims() {
        return { sub, name: account.name, org: account.org };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const { accountId } = ctx.oidc.account;
    const account = accounts[accountId];
    const allowed = new Set([...ALWAYS_GRANTED, ...(account?.scopes ?? [])]);
    const requested = [...ctx.oidc.requestParamOIDCScopes];
    const grant = new ctx.oidc.provider.Grant({ accountId, clientId: ctx.oidc.client.clientId });
    const granted = requested.filter((scope) => allowed.has(scope));
    const refused = requested.filter((scope) => !allowed.has(scope));
    if (granted.length) {
      grant.addOIDCScope(granted.join(' '));
    }
    if (refused.length) {
      grant.rejectOIDCScope(refused.join(' '));
    }
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

function stop() {
  server.close(() => process.exit(0));
  // Keep-alive connections may hold the server open: do not wait for them.
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
