-- The store schema of the first release (git 56f1c84, store/schema.py), as SQLite printed it:
-- an old gateway database, for tests/backend/test_store.py to upgrade. Never edit it.

CREATE TABLE meters (
	pk INTEGER NOT NULL,
	meter VARCHAR(32) NOT NULL,
	label TEXT,
	created_ms BIGINT NOT NULL,
	boot VARCHAR(8),
	boot_idx INTEGER,
	seq INTEGER,
	ts BIGINT,
	pulses BIGINT,
	ml BIGINT,
	flow_mlpm INTEGER,
	valve_reported VARCHAR(8),
	last_seen_ms BIGINT,
	total_ml BIGINT NOT NULL,
	readings BIGINT NOT NULL,
	online BOOLEAN,
	status_boot VARCHAR(8),
	status_ms BIGINT,
	fw VARCHAR(32),
	valve_desired VARCHAR(8),
	PRIMARY KEY (pk),
	UNIQUE (meter)
);

CREATE TABLE readings (
	meter_pk INTEGER NOT NULL,
	boot_idx INTEGER NOT NULL,
	seq INTEGER NOT NULL,
	ts BIGINT NOT NULL,
	pulses BIGINT NOT NULL,
	ml BIGINT NOT NULL,
	flow_mlpm INTEGER NOT NULL,
	valve VARCHAR(8) NOT NULL,
	rx_ms BIGINT NOT NULL,
	PRIMARY KEY (meter_pk, boot_idx, seq)
)
 WITHOUT ROWID;

CREATE INDEX readings_by_time ON readings (meter_pk, ts);

CREATE TABLE consumption_daily (
	meter VARCHAR(32) NOT NULL,
	day INTEGER NOT NULL,
	ml BIGINT NOT NULL,
	PRIMARY KEY (meter, day)
)
 WITHOUT ROWID;

CREATE INDEX consumption_daily_rank ON consumption_daily (day, ml DESC, meter);

CREATE TABLE consumption_monthly (
	meter VARCHAR(32) NOT NULL,
	month INTEGER NOT NULL,
	ml BIGINT NOT NULL,
	PRIMARY KEY (meter, month)
)
 WITHOUT ROWID;

CREATE INDEX consumption_monthly_rank ON consumption_monthly (month, ml DESC, meter);

CREATE TABLE ingest_counters (
	reason VARCHAR(32) NOT NULL,
	field VARCHAR(32) NOT NULL,
	count BIGINT NOT NULL,
	last_ms BIGINT NOT NULL,
	PRIMARY KEY (reason, field)
)
 WITHOUT ROWID;

CREATE TABLE ingest_rejects (
	id INTEGER NOT NULL,
	rx_ms BIGINT NOT NULL,
	topic TEXT NOT NULL,
	reason VARCHAR(32) NOT NULL,
	field VARCHAR(32),
	message TEXT NOT NULL,
	payload TEXT NOT NULL,
	PRIMARY KEY (id)
);

CREATE TABLE meter_boots (
	meter_pk INTEGER NOT NULL,
	boot_idx INTEGER NOT NULL,
	boot VARCHAR(8) NOT NULL,
	first_seen_ms BIGINT NOT NULL,
	PRIMARY KEY (meter_pk, boot_idx),
	UNIQUE (meter_pk, boot),
	FOREIGN KEY(meter_pk) REFERENCES meters (pk)
)
 WITHOUT ROWID;

CREATE TABLE commands (
	id VARCHAR(64) NOT NULL,
	meter_pk INTEGER NOT NULL,
	kind VARCHAR(16) NOT NULL,
	state VARCHAR(8) NOT NULL,
	reason TEXT,
	origin VARCHAR(16) NOT NULL,
	status VARCHAR(10) NOT NULL,
	error TEXT,
	attempts INTEGER NOT NULL,
	created_ms BIGINT NOT NULL,
	sent_ms BIGINT,
	done_ms BIGINT,
	expires_ms BIGINT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(meter_pk) REFERENCES meters (pk)
);

CREATE INDEX commands_by_meter ON commands (meter_pk, created_ms);

CREATE INDEX commands_open ON commands (status, expires_ms);
