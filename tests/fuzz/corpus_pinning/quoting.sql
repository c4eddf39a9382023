SELECT $a$ $b$ ; SET x $b$ $a$; SELECT E'\' ; SET y'; /* a /* b */ c */ -- d
SELECT 'it''s'