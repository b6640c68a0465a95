/**
 * A strict round-robin reverse proxy: request n goes to upstream n mod N, whatever it is, with no
 * stickiness. This is the load balancer that breaks in-process MCP sessions. Bodies and answers are
 * streamed (SSE included); each request's upstream is logged for assertions.
 */
import { createServer, request as httpRequest, type Server } from 'node:http';

export interface ProxyLogEntry {
  method: string;
  upstream: string;
  status?: number;
}

export interface RoundRobinProxy {
  readonly url: string;
  readonly log: ProxyLogEntry[];
  close(): Promise<void>;
}

export async function startRoundRobinProxy(upstreams: readonly string[]): Promise<RoundRobinProxy> {
  let next = 0;
  const log: ProxyLogEntry[] = [];
  const server: Server = createServer((req, res) => {
    const upstream = upstreams[next++ % upstreams.length]!;
    const entry: ProxyLogEntry = { method: req.method ?? 'GET', upstream };
    log.push(entry);
    const target = new URL(req.url ?? '/', upstream);
    const outgoing = httpRequest(
      target,
      { method: req.method, headers: { ...req.headers, host: target.host }, agent: false },
      (answer) => {
        entry.status = answer.statusCode;
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    outgoing.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    res.on('close', () => outgoing.destroy()); // the client left: so does the upstream request
    req.pipe(outgoing);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${address.port}`,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
