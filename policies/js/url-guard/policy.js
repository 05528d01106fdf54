// url-guard: links that lie about where they go.
//
// At DATA it reads the links of the HTML body (<a href="…">text</a>) and the bare URLs of the
// text body, and scores:
//   URL_TEXT_MISMATCH  the link text shows one domain, the href goes to another      (3.0)
//   URL_IP_LITERAL     a link to a bare IP address                                    (2.0)
//   URL_USERINFO       a user part that looks like a host (http://bank.com@evil.test)  (2.5)
//   URL_LOOKALIKE      a domain imitating a protected brand (paypa1.com,
//                      paypal-secure.net, xn--pypal-4ve.com)                          (4.0)
//   URL_LISTED         a linked domain listed in a URI block list (DNS)               (4.0)
//
// Configuration (all optional):
//   brands        comma-separated domains to protect (default: paypal.com, apple.com,
//                 microsoft.com, amazon.com, google.com)
//   uribl_zone    a URI DNS block list zone, e.g. multi.uribl.example (default: none)
//   max_links     links read per message (default 200)
//   score.NAME    the score of a symbol
import { log, dnsLookup } from 'sluice:policy/host@0.2.1';

const SCORES = {
  URL_TEXT_MISMATCH: 3.0,
  URL_IP_LITERAL: 2.0,
  URL_USERINFO: 2.5,
  URL_LOOKALIKE: 4.0,
  URL_LISTED: 4.0,
};

let settings = null;

function parseConfig(pairs) {
  const config = new Map(pairs);
  const scores = { ...SCORES };
  for (const [key, value] of pairs) {
    if (!key.startsWith('score.')) continue;
    const name = key.slice('score.'.length);
    const score = Number(value);
    if (!(name in scores)) throw `unknown symbol ${name} in ${key}`;
    if (!Number.isFinite(score)) throw `${key}: not a number: ${value}`;
    scores[name] = score;
  }
  const brands = (config.get('brands') ?? 'paypal.com,apple.com,microsoft.com,amazon.com,google.com')
    .split(',')
    .map((b) => b.trim().toLowerCase())
    .filter((b) => b.length > 0);
  for (const brand of brands) {
    if (!/^[a-z0-9-]+(\.[a-z0-9-]+)+$/.test(brand)) throw `brands: not a domain: ${brand}`;
  }
  const maxLinks = Number(config.get('max_links') ?? '200');
  if (!Number.isInteger(maxLinks) || maxLinks < 1) throw `max_links: not a positive integer`;
  const zone = (config.get('uribl_zone') ?? '').trim().toLowerCase().replace(/\.$/, '');
  return { scores, brands, maxLinks, zone };
}

const decodeEntities = (s) =>
  s.replace(/&amp;/gi, '&').replace(/&lt;/gi, '<').replace(/&gt;/gi, '>').replace(/&quot;/gi, '"')
    .replace(/&#(\d+);/g, (_, n) => String.fromCodePoint(Number(n) % 0x110000))
    .replace(/&#x([0-9a-f]+);/gi, (_, n) => String.fromCodePoint(parseInt(n, 16) % 0x110000));

const stripTags = (s) => decodeEntities(s.replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim();

// { userinfo, host } of an absolute http(s) URL, or null.
function authority(url) {
  const m = /^\s*https?:\/\/([^/?#\s]*)/i.exec(url);
  if (!m) return null;
  let auth = m[1];
  let userinfo = null;
  const at = auth.lastIndexOf('@');
  if (at >= 0) {
    userinfo = auth.slice(0, at);
    auth = auth.slice(at + 1);
  }
  let host = auth.startsWith('[') ? auth.slice(0, auth.indexOf(']') + 1) : auth.replace(/:\d*$/, '');
  host = host.toLowerCase().replace(/\.$/, '');
  return host ? { userinfo, host } : null;
}

const isIpLiteral = (host) =>
  /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || /^\[[0-9a-f:.]+\]$/.test(host) || /^(0x[0-9a-f]+|\d{8,10})$/.test(host);

// The registrable part of a host name, approximately: its last two labels, or three when the
// second-to-last is a common second-level label (co.uk, com.au …).
function registrable(host) {
  const labels = host.split('.');
  if (labels.length <= 2) return host;
  const second = labels[labels.length - 2];
  const n = ['co', 'com', 'net', 'org', 'gov', 'ac', 'edu'].includes(second) && labels[labels.length - 1].length === 2 ? 3 : 2;
  return labels.slice(-n).join('.');
}

// A domain written in link text ("www.bank.com", "https://bank.com/login"), or null.
function domainInText(text) {
  const m = /(?:https?:\/\/)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?=[\/:\s]|$)/i.exec(text);
  return m ? m[1].toLowerCase() : null;
}

function editDistanceAtMostOne(a, b) {
  if (a === b) return true;
  if (Math.abs(a.length - b.length) > 1) return false;
  let i = 0;
  let j = 0;
  let edits = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) { i++; j++; continue; }
    if (++edits > 1) return false;
    if (a.length > b.length) i++;
    else if (b.length > a.length) j++;
    else { i++; j++; }
  }
  return edits + (a.length - i) + (b.length - j) <= 1;
}

const HOMOGLYPHS = { '0': 'o', '1': 'l', '3': 'e', '5': 's', '4': 'a', 'rn': 'm', 'vv': 'w' };
const unglyph = (s) => Object.entries(HOMOGLYPHS).reduce((acc, [from, to]) => acc.split(from).join(to), s);

// The brand `host` imitates without belonging to it, or null.
function lookalike(host, brands) {
  const reg = registrable(host);
  for (const brand of brands) {
    if (host === brand || host.endsWith('.' + brand)) return null;
  }
  const name = reg.split('.')[0];
  for (const brand of brands) {
    const brandName = brand.split('.')[0];
    if (reg === brand) continue;
    if (name === brandName && reg !== brand) return brand; // paypal.net
    if (brandName.length >= 4 && name.includes(brandName)) return brand; // paypal-secure.com
    if (unglyph(name) === brandName) return brand; // paypa1.com
    if (brandName.length >= 5 && editDistanceAtMostOne(name, brandName)) return brand; // paypall.com
    if (name.startsWith('xn--')) return brand; // an IDN where brands are protected: suspicious
  }
  return null;
}

function links(message, maxLinks) {
  const found = [];
  const html = message.htmlBody(512 * 1024);
  if (html) {
    const anchor = /<a\b[^>]*?\bhref\s*=\s*("([^"]*)"|'([^']*)'|([^\s>]+))[^>]*>([\s\S]*?)<\/a\s*>/gi;
    let m;
    while ((m = anchor.exec(html)) !== null && found.length < maxLinks) {
      const href = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
      found.push({ href, text: stripTags(m[5]) });
    }
  }
  const text = message.textBody(512 * 1024);
  if (text) {
    const bare = /\bhttps?:\/\/[^\s<>"')\]]+/gi;
    let m;
    while ((m = bare.exec(text)) !== null && found.length < maxLinks) {
      found.push({ href: m[0], text: '' });
    }
  }
  return found;
}

function judge(message) {
  const { scores, brands, maxLinks, zone } = settings;
  const hits = new Map();
  const hit = (name, detail) => {
    if (!hits.has(name)) hits.set(name, detail);
  };
  const domains = new Set();
  for (const { href, text } of links(message, maxLinks)) {
    const target = authority(href);
    if (!target) continue;
    const { userinfo, host } = target;
    if (isIpLiteral(host)) hit('URL_IP_LITERAL', host);
    if (userinfo && /[a-z0-9-]+\.[a-z]{2,}/i.test(userinfo)) hit('URL_USERINFO', `${userinfo}@${host}`);
    const shown = domainInText(text);
    if (shown && !isIpLiteral(host) && registrable(shown) !== registrable(host)) {
      hit('URL_TEXT_MISMATCH', `${shown} -> ${host}`);
    }
    if (!isIpLiteral(host)) {
      const brand = lookalike(host, brands);
      if (brand) hit('URL_LOOKALIKE', `${host} imitates ${brand}`);
      domains.add(registrable(host));
    }
  }
  if (zone) {
    // At most five lookups (the host allows ten per call).
    for (const domain of [...domains].slice(0, 5)) {
      try {
        const answers = dnsLookup(`${domain}.${zone}`, 'a');
        if (answers.some((a) => a.startsWith('127.'))) {
          hit('URL_LISTED', `${domain} in ${zone}`);
          break;
        }
      } catch (e) {
        // NXDOMAIN: not listed. Other failures: no opinion.
      }
    }
  }
  const symbols = [...hits].map(([name, detail]) => ({ name, score: scores[name], detail }));
  if (symbols.length > 0) {
    log('debug', 'suspicious links', symbols.map((s) => [s.name, s.detail]));
  }
  return symbols;
}

const keepGoing = (symbols = []) => ({ verdict: { tag: 'continue' }, disconnect: false, symbols, changes: [] });

export const hooks = {
  describe() {
    return { name: 'url-guard', version: '0.1.0', stages: ['data'] };
  },
  init(config) {
    settings = parseConfig(config);
  },
  onConnect() { return keepGoing(); },
  onHelo() { return keepGoing(); },
  onMail() { return keepGoing(); },
  onRcpt() { return keepGoing(); },
  onData(_ctx, message) {
    return keepGoing(judge(message));
  },
};
