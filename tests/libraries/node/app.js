'use strict'
// node-postgres 8: the Pool takes what poolwarden's NodePostgres preset writes, in the
// units pg.Pool takes (idleTimeoutMillis in ms, maxLifetimeSeconds in s); pg reads
// PGAPPNAME itself. A variable that is unset leaves pg.Pool's own default.
const http = require('http')
const { Pool } = require('pg')

function fail(msg) {
  console.error(`node-app: ${msg}`)
  process.exit(1)
}

function envInt(name) {
  const raw = (process.env[name] || '').trim()
  if (raw === '') return undefined
  if (!/^-?\d+$/.test(raw)) fail(`${name}=${JSON.stringify(raw)} is not an integer`)
  return Number(raw)
}

const url = process.env.DATABASE_URL || fail('DATABASE_URL is not set')
const settings = { connectionString: url }
for (const [option, name] of [
  ['min', 'DB_POOL_MIN'],
  ['max', 'DB_POOL_MAX'],
  ['idleTimeoutMillis', 'DB_POOL_IDLE_TIMEOUT_MILLIS'],
  ['maxLifetimeSeconds', 'DB_POOL_MAX_LIFETIME_SECONDS'],
]) {
  const v = envInt(name)
  if (v !== undefined) settings[option] = v
}
const pool = new Pool(settings)

const mode = (process.env.LIBAPP_LEAK || '').trim()
if (!['', 'idle', 'idle-in-transaction', 'second-pool', 'engine-per-health-check'].includes(mode)) {
  fail(`LIBAPP_LEAK=${JSON.stringify(mode)} is not a leak mode`)
}
const held = [] // clients borrowed and never released
const extra = [] // pools nobody configured
let leakError = ''

async function query(sql) {
  await pool.query(sql)
  if (mode === 'second-pool' && extra.length > 0) await extra[0].query(sql)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function leak() {
  const limit = envInt('LIBAPP_LEAK_LIMIT') ?? 3
  const sql = "SELECT count(*) FROM pg_class /* route='/odds/<id>' */"
  if (mode === 'idle' || mode === 'idle-in-transaction') {
    for (let i = 0; i < limit; i++) {
      const client = await pool.connect()
      if (mode === 'idle-in-transaction') await client.query('BEGIN')
      await client.query(sql)
      held.push(client)
    }
  } else if (mode === 'second-pool') {
    extra.push(new Pool({ connectionString: url })) // pg.Pool's defaults
  } else if (mode === 'engine-per-health-check') {
    const period = (envInt('LIBAPP_HEALTH_CHECK_SECONDS') ?? 5) * 1000
    for (let i = 0; i < limit; i++) {
      try {
        const p = new Pool({ connectionString: url })
        await p.query('SELECT 1')
        extra.push(p) // never ended
      } catch (e) {
        leakError = String(e)
      }
      await sleep(period)
    }
  }
}

// Cycles of burst (workers issuing statements back to back), trickle (one statement
// every 500 ms) and quiet (nothing): LIBAPP_TRAFFIC "burst=S,trickle=S,quiet=S".
const traffic = { phase: 'off', cycles: 0, statements: 0, errors: 0, last_error: '' }
const phases = { burst: 0, trickle: 0, quiet: 0 }
for (const part of (process.env.LIBAPP_TRAFFIC || '').split(',')) {
  if (part.trim() === '') continue
  const [k, v] = part.split('=')
  if (!(k.trim() in phases) || !/^\d+$/.test((v || '').trim())) fail(`LIBAPP_TRAFFIC: bad phase ${JSON.stringify(part)}`)
  phases[k.trim()] = Number(v) * 1000
}
const workers = envInt('LIBAPP_BURST_WORKERS') ?? 12

async function one(sql) {
  try {
    await query(sql)
    traffic.statements++
  } catch (e) {
    traffic.errors++
    traffic.last_error = String(e)
  }
}

async function runTraffic() {
  if (phases.burst + phases.trickle + phases.quiet === 0) return
  for (;;) {
    traffic.phase = 'burst'
    const end = Date.now() + phases.burst
    await Promise.all(
      Array.from({ length: workers }, async () => {
        while (Date.now() < end) await one('SELECT pg_sleep(0.05)')
      })
    )
    traffic.phase = 'trickle'
    const tEnd = Date.now() + phases.trickle
    while (Date.now() < tEnd) {
      await one('SELECT 1')
      await sleep(500)
    }
    traffic.phase = 'quiet'
    await sleep(phases.quiet)
    traffic.cycles++
  }
}

let appName = ''
function report() {
  const o = pool.options
  return {
    library: 'NodePostgres',
    driver: `pg ${require('pg/package.json').version}`,
    settings: { min: o.min, max: o.max, idleTimeoutMillis: o.idleTimeoutMillis, maxLifetimeSeconds: o.maxLifetimeSeconds },
    application_name: appName,
    open: pool.totalCount,
    idle: pool.idleCount,
    checked_out: pool.totalCount - pool.idleCount,
    leak: {
      mode,
      leaked: held.length,
      pools: extra.length,
      pool_connections: extra.reduce((n, p) => n + p.totalCount, 0),
      error: leakError,
    },
    traffic,
  }
}

const server = http.createServer(async (req, res) => {
  let code = 200
  let body
  if (req.url === '/healthz') body = { ok: true }
  else if (req.url === '/pool') {
    try {
      body = report()
    } catch (e) {
      code = 503
      body = { error: String(e) }
    }
  } else {
    code = 404
    body = { error: 'not found' }
  }
  // A Content-Length, not chunked: the tests' HTTP client reads the body as it comes.
  const data = Buffer.from(JSON.stringify(body))
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': data.length })
  res.end(data)
})

async function main() {
  // Asked once: /pool must not check a client out, or polling it would be traffic
  // that recycles the pool's connections.
  appName = (await pool.query('SHOW application_name')).rows[0].application_name
  runTraffic()
  leak().catch((e) => {
    leakError = String(e)
  })
  const ip = process.env.POD_IP || '127.0.0.1'
  const port = envInt('PORT') ?? 8080
  server.listen(port, ip, () => console.error(`node-app: listening on ${ip}:${port}`))
}
process.on('SIGTERM', () => process.exit(0))
main().catch((e) => fail(String(e)))
