#!/usr/bin/env node
// approve.mjs: a person approving a sign-in at provider.mjs's pages, over plain HTTP with a
// cookie jar: opens URL (the device flow's verification_uri_complete), then submits each page's
// form in turn (the user code, the login form with --login/--password, the consent) until the
// provider says the sign-in succeeded. --deny aborts at the user code page instead.
// Exit 0 when approved (or denied, with --deny); 1 otherwise, with the last page on stderr.
const args = process.argv.slice(2);
const url = args[0];
const deny = args.includes('--deny');
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const login = arg('login', 'operator@example.com');
const password = arg('password', 'any');

const jar = new Map();
const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
const keep = (res) => {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    jar.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
  }
};
const request = async (method, target, body) => {
  let next = new URL(target);
  for (let hops = 0; hops < 10; hops += 1) {
    const res = await fetch(next, {
      method,
      body,
      redirect: 'manual',
      headers: {
        cookie: cookieHeader(),
        ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
    });
    keep(res);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      next = new URL(location, next);
      method = 'GET';
      body = undefined;
      continue;
    }
    return { page: await res.text(), at: next };
  }
  throw new Error('too many redirects');
};

const attr = (tag, name) => tag.match(new RegExp(`${name}="([^"]*)"`))?.[1];
let { page, at } = await request('GET', url);
for (let step = 0; step < 10; step += 1) {
  if (/Sign-in Success|successfully/i.test(page)) {
    console.log('approved');
    process.exit(0);
  }
  if (deny && /aborted|denied/i.test(page)) {
    console.log('denied');
    process.exit(0);
  }
  const form = page.match(/<form[^>]*method="post"[^>]*>[\s\S]*?<\/form>/i);
  if (!form) break;
  const action = new URL(attr(form[0].match(/<form[^>]*>/i)[0], 'action'), at);
  const fields = new URLSearchParams();
  for (const input of form[0].match(/<input[^>]*>/gi) ?? []) {
    const name = attr(input, 'name');
    if (!name) continue;
    if (name === 'login') fields.set(name, login);
    else if (name === 'password') fields.set(name, password);
    else fields.set(name, attr(input, 'value') ?? '');
  }
  if (deny && fields.has('confirm')) fields.set('abort', 'yes');
  ({ page, at } = await request('POST', action, fields.toString()));
}
console.error(`not approved; the last page (${at}):\n${page}`);
process.exit(1);
