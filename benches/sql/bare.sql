-- The bare read the sample query is compared against: pg_stat_activity as it is,
-- every row and column (`cargo bench --bench sample` runs it with pgbench -f).
SELECT * FROM pg_stat_activity;
