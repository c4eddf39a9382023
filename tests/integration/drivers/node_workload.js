// node_workload.js: test_drivers.py's workload with node-postgres in its default configuration
// (text results, named queries where the application names them). argv[2] is the JSON spec
// test_drivers.py writes; the results, one object per client, are printed as one JSON line.
'use strict'

const pg = require('pg')

const spec = JSON.parse(process.argv[2])
const sql = spec.sql

function config (host, port) {
  return { host, port, database: spec.database, user: spec.user, password: spec.password }
}

async function waitUntilRunning (sleepSql) {
  // A direct connection to PostgreSQL watches for the query: it may first wait for a backend.
  const monitor = new pg.Client(config(spec.monitor_host, spec.monitor_port))
  await monitor.connect()
  try {
    for (let i = 0; i < 1200; i++) {
      const res = await monitor.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query = $1",
        [sleepSql])
      if (res.rows[0].n > 0) return
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    throw new Error('the query ' + sleepSql + ' never ran')
  } finally {
    await monitor.end()
  }
}

async function sqlstateOf (promise) {
  try {
    await promise
    return null
  } catch (error) {
    return error.code || String(error)
  }
}

async function runClient (client) {
  const r = { client }
  const conn = new pg.Client(config(spec.host, spec.port))
  await conn.connect()
  try {
    r.settings = Object.values((await conn.query({ text: sql.settings, rowMode: 'array' })).rows[0])
    r.params = []
    for (let k = 0; k < spec.param_rounds; k++) {
      const res = await conn.query({ name: 'drv_params', text: sql.params, values: [client, k, `c${client}-${k}`] })
      const row = res.rows[0]
      r.params.push([row.client, row.doubled, row.tag])
    }
    await conn.query('BEGIN')
    for (let k = 0; k < spec.committed_rows; k++) {
      await conn.query({ name: 'drv_insert', text: sql.insert, values: [client, k, `c${client}-${k}`] })
    }
    await conn.query('COMMIT')
    await conn.query('BEGIN')
    for (let k = 100; k < 105; k++) {
      await conn.query({ name: 'drv_insert', text: sql.insert, values: [client, k, 'rolled back'] })
    }
    await conn.query('ROLLBACK')
    await conn.query('BEGIN')
    await conn.query({ name: 'drv_insert', text: sql.insert, values: [client, 200, 'failed transaction'] })
    r.error = await sqlstateOf(conn.query({ name: 'drv_divide', text: sql.divide, values: [0] }))
    await conn.query('ROLLBACK')
    r.rows = (await conn.query({ name: 'drv_own', text: sql.own_rows, values: [client], rowMode: 'array' })).rows
    const large = (await conn.query({ text: sql.large, values: [client], rowMode: 'array' })).rows
    r.large = [large.length, large.reduce((sum, row) => sum + row[0], 0)]
    r.large_fetched = null // a cursor needs pg-cursor, which is not installed
    const t = (await conn.query({ text: sql.types, values: [client], rowMode: 'array' })).rows[0]
    r.types = [t[0], t[1].toString('hex'), t[2], t[3].getTime(), t[4], t[5], t[6]]
    r.nulls = (await conn.query({ text: sql.nulls, values: [null, null, null], rowMode: 'array' })).rows[0]
    // Queries issued together: node-postgres queues them and sends each when the last one ends.
    const batch = []
    for (let k = 1; k <= spec.batch_rows; k++) {
      batch.push(conn.query({ name: 'drv_batch', text: sql.batch, values: [client, k, `c${client}-batch-${k}`] }))
    }
    await Promise.all(batch)
    r.batch = (await conn.query({ text: sql.batch_check, values: [client], rowMode: 'array' })).rows[0]
    const value = Buffer.alloc(spec.big_bytes)
    for (let i = 0; i < value.length; i++) value[i] = (7 * i + client) % 256
    const big = (await conn.query({ text: sql.big, values: [value], rowMode: 'array' })).rows[0]
    r.big = [big[0], big[1], value.equals(big[2])]
    r.bad_batch = null // node-postgres has no batch
    r.copy = null // COPY needs pg-copy-streams, which is not installed
    const sleeping = conn.query(spec.sleep[client])
    const outcome = sqlstateOf(sleeping)
    await waitUntilRunning(spec.sleep[client])
    // pg's own way: a second Client sends the CancelRequest with the first one's key.
    new pg.Client(config(spec.host, spec.port)).cancel(conn, conn.activeQuery)
    r.cancel = await outcome
    r.after_cancel = (await conn.query({ text: sql.after, values: [client], rowMode: 'array' })).rows[0][0]
  } finally {
    await conn.end()
  }
  return r
}

async function main () {
  const clients = []
  for (let c = 0; c < spec.clients; c++) clients.push(runClient(c))
  const results = await Promise.all(clients)
  process.stdout.write(JSON.stringify(results) + '\n')
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + '\n')
  process.exit(1)
})
