// Benchmark peer: a Socket.IO server whose rooms span instances through Redis.
//
// The fan-out of bench/broker_fanout.py on Socket.IO, as its docs set it up:
// socket.io with @socket.io/redis-adapter (Redis pub/sub) on the `redis`
// client, one process per instance. Every client is in the main namespace;
// an "m" event from one is sent to every other client of every instance
// with socket.broadcast.emit("m", data) -- the daemonkit side's
// group("subscribers").broadcast(message) -- so the load generator
// (bench/wsload.c --eio) sees the same bytes on both.
//
// WebSocket transport only (no HTTP long-polling first: the load generator
// opens the WebSocket directly, as socket.io-client does with
// transports: ["websocket"]), no compression (Socket.IO's default), and a
// ping interval longer than any run, since the load generator answers no
// pings. The packages are the pinned ones of bench/node/package.json,
// installed by bench/_deps.py; bench/broker_fanout.py runs it as
//
//     NODE_PATH=bench/node/node_modules node bench/servers/socketio_fanout.js PORT REDIS_URL
"use strict";

const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
    const [port, url] = process.argv.slice(2);
    if (!port || !url) {
        console.error("usage: node socketio_fanout.js PORT REDIS_URL");
        process.exit(1);
    }
    const pubClient = createClient({ url });
    const subClient = pubClient.duplicate();
    for (const client of [pubClient, subClient]) {
        client.on("error", (err) => console.error("redis:", err.message));
    }
    await Promise.all([pubClient.connect(), subClient.connect()]);
    const httpServer = http.createServer();
    const io = new Server(httpServer, {
        adapter: createAdapter(pubClient, subClient),
        transports: ["websocket"],
        serveClient: false,
        pingInterval: 300000,
        pingTimeout: 60000,
    });
    io.on("connection", (socket) => {
        socket.on("m", (data) => socket.broadcast.emit("m", data));
    });
    // Ready (the adapter subscribed) before the port accepts: the driver waits for the port.
    httpServer.listen(Number(port), "127.0.0.1");
    const stop = () => {
        io.close();
        Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
