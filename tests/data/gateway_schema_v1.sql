-- The gateway's SQLite schema before the version table (schema version 1), as chatcap
-- created it in <data dir>/chatcap.db; tests/test_gateway_store.py upgrades a file made with it.
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    balance_micros INTEGER NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS credits (
    id INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys(id),
    amount_micros INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id TEXT PRIMARY KEY,
    key_id TEXT REFERENCES keys(id),
    completion_id TEXT,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_key ON ledger(key_id);
CREATE INDEX IF NOT EXISTS credits_key ON credits(key_id);
