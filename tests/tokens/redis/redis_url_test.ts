import assert from "node:assert/strict";
import {
  describeRedisUrl,
  parseRedisUrl,
  type RedisUrl,
} from "../../../src/tokens/redis/redis_url.ts";

const VALID: readonly (readonly [string, RedisUrl, string])[] = [
  [
    "redis://localhost",
    { transport: "tcp", hostname: "localhost", port: 6379, db: 0 },
    "redis://localhost:6379/0",
  ],
  [
    "redis://10.0.0.5:6380/2",
    { transport: "tcp", hostname: "10.0.0.5", port: 6380, db: 2 },
    "redis://10.0.0.5:6380/2",
  ],
  [
    "redis://[::1]:7000/",
    { transport: "tcp", hostname: "::1", port: 7000, db: 0 },
    "redis://[::1]:7000/0",
  ],
  [
    "redis://[2001:DB8::7]/1",
    { transport: "tcp", hostname: "2001:db8::7", port: 6379, db: 1 },
    "redis://[2001:db8::7]:6379/1",
  ],
  [
    "redis://vap:s3cr%40t%3Ax@redis.example:6379/3",
    {
      transport: "tcp",
      hostname: "redis.example",
      port: 6379,
      db: 3,
      username: "vap",
      password: "s3cr@t:x",
    },
    "redis://vap@redis.example:6379/3",
  ],
  [
    "redis://:only-a-password@host",
    { transport: "tcp", hostname: "host", port: 6379, db: 0, password: "only-a-password" },
    "redis://host:6379/0",
  ],
  [
    "rediss://u%20ser:pw@redis.example:6390/0",
    {
      transport: "tls",
      hostname: "redis.example",
      port: 6390,
      db: 0,
      username: "u ser",
      password: "pw",
    },
    "rediss://u%20ser@redis.example:6390/0",
  ],
  ["unix:/run/redis/redis.sock", {
    transport: "unix",
    path: "/run/redis/redis.sock",
    db: 0,
  }, "unix:/run/redis/redis.sock"],
  ["unix:///run/redis.sock?db=4", {
    transport: "unix",
    path: "/run/redis.sock",
    db: 4,
  }, "unix:/run/redis.sock?db=4"],
  [
    "unix:/run/redis.sock?user=vap&password=p%26w&db=1",
    { transport: "unix", path: "/run/redis.sock", db: 1, username: "vap", password: "p&w" },
    "unix:/run/redis.sock?db=1&user=vap",
  ],
  ["unix:/r.sock?password=pw", {
    transport: "unix",
    path: "/r.sock",
    db: 0,
    password: "pw",
  }, "unix:/r.sock"],
];

Deno.test("parseRedisUrl reads redis://, rediss:// and unix: URLs; describeRedisUrl drops the password", () => {
  for (const [text, expected, described] of VALID) {
    const parsed = parseRedisUrl(text);
    assert.deepEqual(parsed, expected, text);
    assert.equal(describeRedisUrl(parsed), described, text);
    if (parsed.password !== undefined) {
      assert.ok(!describeRedisUrl(parsed).includes(parsed.password), text);
    }
  }
});

const INVALID: readonly (readonly [string, RegExp])[] = [
  ["http://localhost", /expected redis:\/\/, rediss:\/\/ or unix:\/path/],
  ["localhost:6379", /expected redis/],
  ["redis:localhost", /expected \/\/ after the scheme/],
  ["redis://", /not a URL|no host/],
  ["redis://host:0", /port out of range/],
  ["redis://host:70000", /not a URL|port out of range/],
  ["redis://host/x", /invalid database \(a number/],
  ["redis://host/1/2", /invalid database/],
  ["redis://host/-1", /invalid database/],
  ["redis://host?db=1", /no query or fragment/],
  ["redis://ho_st", /invalid host name/],
  ["redis://user@host", /credentials without a password/],
  ["redis://user:%zz@host", /invalid percent-encoding/],
  ["unix:relative/path", /must be absolute/],
  ["unix:/r.sock?db=x", /invalid database/],
  ["unix:/r.sock?user=a", /a user needs a password/],
  ["unix:/r.sock?color=red", /unknown parameter \(db, user and password/],
  ["unix:/r.sock?db=1&db=2", /"db" given twice/],
];

Deno.test("parseRedisUrl refuses anything else with a clear SyntaxError", () => {
  for (const [text, message] of INVALID) {
    assert.throws(() => parseRedisUrl(text), (error: unknown) => {
      assert.ok(error instanceof SyntaxError, text);
      assert.match(error.message, message, text);
      return true;
    });
  }
});

Deno.test("parseRedisUrl never repeats the password in an error", () => {
  for (
    const text of [
      "redis://u:hunter2@host/nodb",
      "rediss://:hunter2@host:99999",
      "unix:/r.sock?password=hunter2&db=x",
      "redis://u:hunter2@ho_st/0",
      // Malformed where a pattern could not say which part is the password.
      "redis://:hun/ter2@host",
      "redis://u:hun@ter2@ho_st",
      "unix:/r.sock?pass%77ord=hunter2",
      "unix:/r.sock?hunter2",
      "unix:/r.sock?hunter2=x",
      "redis://host/hunter2",
    ]
  ) {
    assert.throws(() => parseRedisUrl(text), (error: unknown) => {
      assert.ok(error instanceof SyntaxError, text);
      for (const part of ["hunter2", "hun", "ter2"]) {
        assert.ok(!error.message.includes(part), `${text}: ${error.message}`);
      }
      return true;
    });
  }
});
