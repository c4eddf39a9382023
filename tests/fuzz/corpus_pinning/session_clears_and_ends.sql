SELECT set_config('work_mem', '9MB', false), set_config('a', $1, 'off');
SELECT set_config('TimeZone', lower('X'), false);
SET work_mem FROM CURRENT;
UNLISTEN *; CLOSE ALL; DISCARD TEMP; SELECT pg_advisory_unlock_all();
BEGIN; SET x.y = 'it''s'; SAVEPOINT s; ROLLBACK TO SAVEPOINT s; COMMIT AND CHAIN; ROLLBACK PREPARED 'g'; END; ABORT
