-- A rollout's tenants counted by wave and state, kept with the rollout and changed in the
-- same transaction as its tenants, so claims and outcomes read them in O(1) instead of
-- counting every tenant of the rollout. Twelve numbers: wave (0 canary, 1 rest) times the
-- states PENDING, RUNNING, SUCCEEDED, SKIPPED, FAILED, CANCELLED, in that order.
ALTER TABLE tenant_schema_rollouts
    ADD COLUMN counts bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}'
        CHECK (cardinality(counts) = 12);

UPDATE tenant_schema_rollouts r SET counts = ARRAY(
    SELECT (SELECT count(*) FROM tenant_schema_rollout_tenants t
            WHERE t.rollout_id = r.rollout_id AND t.wave = w.wave AND t.state = s.state)
    FROM unnest('{0,1}'::smallint[]) WITH ORDINALITY AS w (wave, wave_order)
    CROSS JOIN unnest('{PENDING,RUNNING,SUCCEEDED,SKIPPED,FAILED,CANCELLED}'::text[])
        WITH ORDINALITY AS s (state, state_order)
    ORDER BY w.wave_order, s.state_order);
