-- The latest provisioning run's summary, kept on the tenant's row so GetTenant is one
-- primary-key read (it was a LATERAL join over provisioning_runs on every read). A trigger
-- keeps it: every write of a run, by any replica of any version, updates its tenant's
-- summary in the same transaction when the run is the tenant's latest and the summary
-- changed. Runs are only written after their tenant's row is locked or inserted by the
-- same code path (run first, then tenant), so the trigger's update adds no lock order.
ALTER TABLE tenants
    ADD COLUMN latest_run_id uuid,
    ADD COLUMN latest_run_state text,
    ADD COLUMN latest_run_current_step text,
    ADD COLUMN latest_run_completed_steps integer,
    ADD COLUMN latest_run_total_steps integer;

UPDATE tenants t SET
    latest_run_id = r.run_id,
    latest_run_state = r.state,
    latest_run_current_step = r.current_step,
    latest_run_completed_steps = r.completed_steps,
    latest_run_total_steps = r.total_steps
FROM (SELECT DISTINCT ON (tenant_id) tenant_id, run_id, state, current_step,
             completed_steps, total_steps
      FROM provisioning_runs ORDER BY tenant_id, run_id DESC) r
WHERE r.tenant_id = t.tenant_id;

-- The tables are those of the schema the migration ran in, whatever the caller's path.
CREATE FUNCTION tenantd_latest_run_summary() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE tenants SET
        latest_run_id = NEW.run_id,
        latest_run_state = NEW.state,
        latest_run_current_step = NEW.current_step,
        latest_run_completed_steps = NEW.completed_steps,
        latest_run_total_steps = NEW.total_steps
    WHERE tenant_id = NEW.tenant_id
      AND (latest_run_id IS NULL OR latest_run_id <= NEW.run_id)
      AND (latest_run_id IS DISTINCT FROM NEW.run_id
           OR latest_run_state IS DISTINCT FROM NEW.state
           OR latest_run_current_step IS DISTINCT FROM NEW.current_step
           OR latest_run_completed_steps IS DISTINCT FROM NEW.completed_steps
           OR latest_run_total_steps IS DISTINCT FROM NEW.total_steps);
    RETURN NULL;
END
$$;

CREATE TRIGGER provisioning_runs_latest_summary
    AFTER INSERT OR UPDATE OF state, current_step, completed_steps, total_steps
    ON provisioning_runs
    FOR EACH ROW EXECUTE FUNCTION tenantd_latest_run_summary();
