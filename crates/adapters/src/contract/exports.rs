//! Contract of [`ExportRepository`](tenantd_domain::ports::ExportRepository): exports are
//! stored for existing tenants only, claimed by one worker at a time under fencing leases,
//! keep their archive once succeeded, and are listed for deletion once expired.

use chrono::Duration;
use tenantd_domain::RepoError;
use tenantd_domain::export::{Export, ExportArchive, ExportId, ExportProgress, ExportState};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::{Tenant, TenantId};
use uuid::Uuid;

use super::Stores;
use super::fixtures::{now, run_for, slug, tenant};

async fn stored_tenant(stores: &Stores) -> Tenant {
    let t = tenant(&slug("export"), "free", &[]);
    stores
        .tenants
        .create(&t, &run_for(&t), &[], None)
        .await
        .expect("create");
    t
}

fn export_of(t: &Tenant, hours: i64) -> Export {
    Export::new(
        ExportId(Uuid::now_v7()),
        t.id(),
        "admin".into(),
        now(),
        Duration::hours(hours),
    )
}

/// `export` with its attempt failed (to retry) at `at`, as its next write stores it.
fn failed(export: &Export, at: chrono::DateTime<chrono::Utc>) -> Export {
    let mut next = export.clone();
    let policy = tenantd_domain::provisioning::RetryPolicy {
        base: Duration::seconds(1),
        max_delay: Duration::seconds(1),
        max_attempts: 3,
    };
    next.fail(StepError::new("X", "late"), &policy, 1.0, at)
        .expect("fail");
    next.version = export.version + 1;
    next
}

/// Contract: an export reads back as stored, due at once; one for a tenant that does not
/// exist is refused.
pub async fn an_export_is_stored_for_an_existing_tenant_only(stores: Stores) {
    let t = stored_tenant(&stores).await;
    let export = export_of(&t, 72);
    stores.exports.create(&export).await.expect("create");
    assert_eq!(
        stores.exports.get(export.id).await.expect("get"),
        Some(export.clone())
    );
    let unknown = TenantId::from_uuid(Uuid::now_v7()).expect("v7");
    let orphan = Export::new(
        ExportId(Uuid::now_v7()),
        unknown,
        "admin".into(),
        now(),
        Duration::hours(1),
    );
    assert_eq!(
        stores.exports.create(&orphan).await.expect_err("no tenant"),
        RepoError::NotFound
    );
    assert_eq!(stores.exports.get(orphan.id).await.expect("get"), None);
}

/// Contract: a due export goes to one claimer; its attempt is stored under the lease; once
/// the lease expires another takes it over and the first holder's writes are refused; a
/// succeeded export keeps its archive and is never due again.
pub async fn an_export_is_claimed_once_fenced_after_takeover_and_keeps_its_archive(stores: Stores) {
    let t = stored_tenant(&stores).await;
    let export = export_of(&t, 72);
    stores.exports.create(&export).await.expect("create");
    let lease_for = Duration::seconds(30);
    let first = stores
        .exports
        .claim("a", now(), lease_for)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(first.export, export);
    assert_eq!(
        stores
            .exports
            .claim("b", now(), lease_for)
            .await
            .expect("claim"),
        None
    );
    let mut started = export.clone();
    started.start(now()).expect("start");
    started.version = 2;
    stores
        .exports
        .save(&started, 1, &first.lease, now() + lease_for)
        .await
        .expect("save");
    assert_eq!(
        stores.exports.get(export.id).await.expect("get"),
        Some(started.clone())
    );

    let later = now() + Duration::minutes(2);
    let second = stores
        .exports
        .claim("b", later, lease_for)
        .await
        .expect("claim")
        .expect("the expired lease is taken over, the attempt found in flight");
    assert_eq!(second.export, started);
    let stale = failed(&started, later);
    assert_eq!(
        stores
            .exports
            .save(&stale, 2, &first.lease, later + lease_for)
            .await
            .expect_err("fenced"),
        RepoError::LeaseLost
    );
    assert!(
        !stores
            .exports
            .renew(export.id, 2, &first.lease, later + lease_for)
            .await
            .expect("renew")
    );

    let mut done = started.clone();
    let archive = ExportArchive {
        name: format!("{}-1.tar.gz", export.id),
        size: 4096,
        sha256: "ab".repeat(32),
        files: 5,
    };
    done.succeed(archive.clone(), later).expect("succeed");
    done.version = 3;
    stores
        .exports
        .save(&done, 2, &second.lease, later + lease_for)
        .await
        .expect("save");
    let read = stores
        .exports
        .get(export.id)
        .await
        .expect("get")
        .expect("export");
    assert_eq!(read.state, ExportState::Succeeded);
    assert_eq!(read.archive, Some(archive));
    assert_eq!(read, done);
    stores
        .exports
        .release(export.id, &second.lease)
        .await
        .expect("release");
    assert_eq!(
        stores
            .exports
            .claim("c", later + Duration::hours(1), lease_for)
            .await
            .expect("claim"),
        None,
        "an ended export is never due"
    );
}

/// Contract: the progress of an attempt is recorded under its holder's lease only, and
/// reads back.
pub async fn an_attempts_progress_is_recorded_under_its_lease_only(stores: Stores) {
    let t = stored_tenant(&stores).await;
    let export = export_of(&t, 72);
    stores.exports.create(&export).await.expect("create");
    let lease_for = Duration::seconds(30);
    let first = stores
        .exports
        .claim("a", now(), lease_for)
        .await
        .expect("claim")
        .expect("due");
    stores
        .exports
        .release(export.id, &first.lease)
        .await
        .expect("release");
    let second = stores
        .exports
        .claim("b", now(), lease_for)
        .await
        .expect("claim")
        .expect("released, due again");
    let progress = ExportProgress {
        files: 3,
        bytes: 4096,
    };
    assert!(
        !stores
            .exports
            .progress(export.id, &first.lease, progress)
            .await
            .expect("progress"),
        "a former holder records no progress"
    );
    let read = stores
        .exports
        .get(export.id)
        .await
        .expect("get")
        .expect("export");
    assert_eq!(read.progress, ExportProgress::default());
    assert!(
        stores
            .exports
            .progress(export.id, &second.lease, progress)
            .await
            .expect("progress")
    );
    let read = stores
        .exports
        .get(export.id)
        .await
        .expect("get")
        .expect("export");
    assert_eq!(read.progress, progress, "the holder's progress reads back");
    assert_eq!(
        read.version, export.version,
        "progress is no change of the export"
    );
}

/// Contract: a tenant's exports are listed oldest first, and only its own; exports past their
/// expiry are listed oldest first, at most the limit, and are gone once deleted; others stay.
pub async fn expired_exports_are_listed_oldest_first_and_deleted(stores: Stores) {
    let t = stored_tenant(&stores).await;
    let (old, older, kept) = (export_of(&t, 2), export_of(&t, 1), export_of(&t, 72));
    for e in [&old, &older, &kept] {
        stores.exports.create(e).await.expect("create");
    }
    let other = stored_tenant(&stores).await;
    let theirs = export_of(&other, 2);
    stores.exports.create(&theirs).await.expect("create");
    let ids: Vec<_> = stores
        .exports
        .of_tenant(t.id())
        .await
        .expect("of tenant")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        ids,
        [old.id, older.id, kept.id],
        "the tenant's own, oldest first"
    );
    stores.exports.delete(theirs.id).await.expect("delete");
    let at = now() + Duration::hours(3);
    let expired = stores.exports.expired(at, 10).await.expect("expired");
    let ids: Vec<_> = expired.iter().map(|e| e.id).collect();
    assert_eq!(ids, [older.id, old.id]);
    assert_eq!(
        stores.exports.expired(at, 1).await.expect("expired").len(),
        1
    );
    stores.exports.delete(older.id).await.expect("delete");
    stores
        .exports
        .delete(older.id)
        .await
        .expect("deleting again is harmless");
    assert_eq!(stores.exports.get(older.id).await.expect("get"), None);
    assert!(stores.exports.get(kept.id).await.expect("get").is_some());
}
