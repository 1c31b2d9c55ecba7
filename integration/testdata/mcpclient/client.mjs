// An MCP client built on the official TypeScript SDK, run by the
// integration tests against a node's /mcp.
//
//   node client.mjs https://127.0.0.1:PORT/mcp sha256//<base64 SPKI hash> [< token]
//
// The node is trusted by its pinned key (curl's --pinnedpubkey form), never
// by turning verification off. A bearer token, if any, is read from stdin.
// It lists the tools, calls echo.say and echo.caps, and prints JSON.
import crypto from 'node:crypto';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { Readable } from 'node:stream';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

// pinOf is the certificate's public-key pin: sha256//<base64 of the SHA-256
// of its SubjectPublicKeyInfo>.
function pinOf(raw) {
  const spki = new crypto.X509Certificate(raw).publicKey.export({ type: 'spki', format: 'der' });
  return 'sha256//' + crypto.createHash('sha256').update(spki).digest('base64');
}

// nodeCertificate fetches the node's self-signed certificate and checks its
// key against the pin: it then serves as the only CA the client trusts,
// and checkServerIdentity checks the pin again on every connection.
function nodeCertificate(url, pin) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({
      host: url.hostname, port: Number(url.port || 443), servername: net.isIP(url.hostname) ? undefined : url.hostname,
      ALPNProtocols: ['http/1.1'],
      // Verified right below by the pin; nothing is sent on this connection.
      rejectUnauthorized: false,
    }, () => {
      const cert = sock.getPeerCertificate(false);
      sock.destroy();
      if (!cert || !cert.raw) {
        reject(new Error('the node presented no certificate'));
      } else if (pinOf(cert.raw) !== pin) {
        reject(new Error(`the node's key ${pinOf(cert.raw)} is not the pinned ${pin}`));
      } else {
        resolve(new crypto.X509Certificate(cert.raw).toString());
      }
    });
    sock.on('error', reject);
  });
}

// pinnedFetch is the fetch the SDK's transport uses: node:https through an
// agent that trusts only the pinned node, with a streaming body (SSE).
function pinnedFetch(agent) {
  return (url, init = {}) => new Promise((resolve, reject) => {
    const method = init.method ?? 'GET';
    const headers = {};
    new Headers(init.headers ?? {}).forEach((v, k) => { headers[k] = v; });
    const req = https.request(new URL(url), { method, headers, agent, signal: init.signal ?? undefined }, (res) => {
      const h = new Headers();
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) h.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
      const empty = method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304;
      resolve(new Response(empty ? null : Readable.toWeb(res), { status: res.statusCode, statusText: res.statusMessage, headers: h }));
    });
    req.on('error', reject);
    req.end(init.body ?? undefined);
  });
}

async function readStdin() {
  if (process.stdin.isTTY) return '';
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8').trim();
}

async function main() {
  const [endpoint, pin] = process.argv.slice(2);
  if (!endpoint || !pin || !pin.startsWith('sha256//')) {
    throw new Error('usage: node client.mjs https://HOST:PORT/mcp sha256//<pin> [< token]');
  }
  const url = new URL(endpoint);
  const token = await readStdin();
  const ca = await nodeCertificate(url, pin);
  const agent = new https.Agent({
    ca,
    // The node routes a connection by its ALPN: HTTP/1.1 reaches the HTTP
    // plugin (node:https speaks no h2).
    ALPNProtocols: ['http/1.1'],
    keepAlive: true,
    checkServerIdentity: (_host, cert) => {
      const got = pinOf(cert.raw);
      return got === pin ? undefined : new Error(`the node's key ${got} is not the pinned ${pin}`);
    },
  });
  const transport = new StreamableHTTPClientTransport(url, {
    fetch: pinnedFetch(agent),
    requestInit: token ? { headers: { Authorization: `Bearer ${token}` } } : undefined,
  });
  const client = new Client({ name: 'alknet-mcpclient', version: '0.0.0' });
  try {
    await client.connect(transport);
    const tools = [];
    let cursor;
    do {
      const page = await client.listTools(cursor ? { cursor } : {});
      tools.push(...page.tools);
      cursor = page.nextCursor;
    } while (cursor);
    const say = await client.callTool({ name: 'echo.say', arguments: { text: 'hello from typescript' } });
    let caps;
    try {
      caps = await client.callTool({ name: 'echo.caps', arguments: {} });
    } catch (e) {
      caps = { error: String(e?.message ?? e) };
    }
    process.stdout.write(JSON.stringify({
      server: client.getServerVersion(),
      protocol: transport.protocolVersion,
      tools: tools.map((t) => ({ name: t.name, description: t.description, inputSchema: t.inputSchema })),
      say,
      caps,
    }) + '\n');
  } finally {
    await client.close();
    agent.destroy();
  }
}

main().catch((e) => {
  process.stderr.write(`mcpclient: ${e?.stack ?? e}\n`);
  process.exit(1);
});
