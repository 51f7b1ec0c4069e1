#!/usr/bin/env node
// provider.mjs: a real, certified OpenID provider (npm oidc-provider, pinned in package.json)
// on 127.0.0.1 for the sign-in flow tests: client credentials with private_key_jwt
// (certificates), the device authorization grant (RFC 8628), authorization code + PKCE, and
// refresh tokens (rotated for public clients, as Entra ID does).
//
// Usage: node provider.mjs --clients FILE [--access-ttl SECONDS] [--port N] [--tenant T]
//   --tenant T: Entra ID's endpoint shape, so that configs with `tenant` + `authority` work:
//   /T/oauth2/v2.0/token, /T/oauth2/v2.0/devicecode, /T/oauth2/v2.0/authorize (default T:
//   tenant-1).
//   FILE: a JSON array of client metadata (oidc-provider's names). A client may give
//   "certificate_pem_file": the public key of that PEM certificate becomes its `jwks`.
// Prints "oidc-provider listening http://127.0.0.1:PORT" once ready.
//
// GET /__stats: {"grants": {"<grant_type>": n}, "errors": {"<grant_type>": n}}, counted on
// the provider's own grant.success / grant.error events.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const accessTtl = Number(arg('access-ttl', '3600'));
const tenant = arg('tenant', 'tenant-1');
const clients = JSON.parse(fs.readFileSync(arg('clients'), 'utf8')).map((c) => {
  const { certificate_pem_file: pem, ...rest } = c;
  if (pem) {
    const key = new crypto.X509Certificate(fs.readFileSync(pem)).publicKey;
    rest.jwks = { keys: [key.export({ format: 'jwk' })] };
  }
  return rest;
});

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(arg('port', '0')), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  scopes: ['openid', 'profile', 'offline_access', 'api'],
  features: {
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    devInteractions: { enabled: true },
    revocation: { enabled: true },
  },
  ttl: {
    AccessToken: accessTtl,
    ClientCredentials: accessTtl,
    DeviceCode: 600,
    Grant: 86400,
    Interaction: 3600,
    RefreshToken: 86400,
    Session: 86400,
  },
  // A refresh token whenever the client may use one (Entra issues one with offline_access).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  routes: {
    token: `/${tenant}/oauth2/v2.0/token`,
    device_authorization: `/${tenant}/oauth2/v2.0/devicecode`,
    authorization: `/${tenant}/oauth2/v2.0/authorize`,
    revocation: `/${tenant}/oauth2/v2.0/revoke`,
    code_verification: '/device',
  },
});

const grants = {};
const errors = {};
const grantOf = (ctx) => ctx.oidc?.params?.grant_type ?? 'unknown';
provider.on('grant.success', (ctx) => { grants[grantOf(ctx)] = (grants[grantOf(ctx)] ?? 0) + 1; });
provider.on('grant.error', (ctx) => { errors[grantOf(ctx)] = (errors[grantOf(ctx)] ?? 0) + 1; });

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url === '/__stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ grants, errors }));
    return;
  }
  callback(req, res);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`oidc-provider listening ${issuer}`);
