//! Identity and administration on both databases: tokens, grants, enforcement, bad input, and how
//! fast a change holds. SQLite always; PostgreSQL from `DATABASE_URL` (set by scripts/test).

use mcpgw::identity::{AuthError, Directory};
use mcpgw::policy::{Outcome, PolicyConfig, PolicySet};
use mcpgw::store::{self, Db, Store};
use mcpgw_tests::db::TestDb;
use mcpgw_tests::{ask, wait_until_async};
use std::time::{Duration, Instant};

async fn open(db: &TestDb) -> (Store, std::sync::Arc<Directory>) {
    let store = Store::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", db.backend));
    let directory = Directory::open(store.clone()).await.unwrap();
    (store, directory)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_issue_verify_revoke_and_expire() {
    for db in TestDb::all().await {
        let (store, dir) = open(&db).await;
        store.workspace_create("acme").await.unwrap();
        store.member_add("acme", "alice").await.unwrap();
        store.member_add("acme", "bob").await.unwrap();
        let alice = store
            .token_issue("acme", Some("alice"), None)
            .await
            .unwrap();
        let bob = store.token_issue("acme", Some("bob"), None).await.unwrap();
        let system = store.token_issue("acme", None, None).await.unwrap();
        assert!(
            alice.token.starts_with("mcpgw_") && alice.token.len() == 6 + 64,
            "256 bits, hex"
        );
        assert_eq!(alice.info.prefix, alice.token[..12]);
        dir.reload().await.unwrap();

        let id = dir.authenticate(&alice.token).unwrap();
        assert_eq!(id.principal.member.as_deref(), Some("alice"));
        assert_eq!(id.principal.workspace, "acme");
        assert_eq!(id.token_id, alice.info.id);
        assert_eq!(
            dir.authenticate(&system.token).unwrap().principal.member,
            None,
            "workspace token"
        );
        assert_eq!(
            dir.authenticate("mcpgw_0000").unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(dir.authenticate("").unwrap_err(), AuthError::Invalid);
        // Change the last character (to one it is not: 1 token in 16 already ends in 0).
        let last = if alice.token.ends_with('0') { '1' } else { '0' };
        let flipped = format!("{}{last}", &alice.token[..alice.token.len() - 1]);
        assert_eq!(dir.authenticate(&flipped).unwrap_err(), AuthError::Invalid);

        // Revoking alice's token ends her access and nobody else's.
        store.token_revoke(&alice.info.id, None).await.unwrap();
        dir.reload().await.unwrap();
        assert_eq!(
            dir.authenticate(&alice.token).unwrap_err(),
            AuthError::Invalid,
            "{}",
            db.backend
        );
        assert!(dir.authenticate(&bob.token).is_ok());
        assert!(dir.authenticate(&system.token).is_ok());

        // Expiry.
        let short = store
            .token_issue("acme", Some("bob"), Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        dir.reload().await.unwrap();
        assert!(dir.authenticate(&short.token).is_ok());
        expire_now(&store, &short.info.id).await;
        dir.reload().await.unwrap();
        assert_eq!(
            dir.authenticate(&short.token).unwrap_err(),
            AuthError::Expired,
            "{}",
            db.backend
        );

        // Removing a member revokes all their tokens.
        let bob2 = store.token_issue("acme", Some("bob"), None).await.unwrap();
        store.member_remove("acme", "bob").await.unwrap();
        dir.reload().await.unwrap();
        assert_eq!(
            dir.authenticate(&bob.token).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            dir.authenticate(&bob2.token).unwrap_err(),
            AuthError::Invalid
        );
        assert!(dir.authenticate(&system.token).is_ok());
        let listed = store.token_list("acme").await.unwrap();
        assert_eq!(
            listed.len(),
            1,
            "only the workspace token is left: {listed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_enforcement_feed_the_policy_chain() {
    let policies =
        tokio::task::spawn_blocking(|| PolicySet::load(PolicyConfig::default()).unwrap())
            .await
            .unwrap();
    for db in TestDb::all().await {
        let (store, dir) = open(&db).await;
        store.workspace_create("acme").await.unwrap();
        store.member_add("acme", "alice").await.unwrap();
        store
            .grant_add("acme", "alice", &["db:*".into(), "*:search".into()])
            .await
            .unwrap();
        let token = store
            .token_issue("acme", Some("alice"), None)
            .await
            .unwrap()
            .token;
        dir.reload().await.unwrap();

        let decide = |server: &'static str, tool: &'static str| {
            let id = dir.authenticate(&token).unwrap();
            let verdict = policies
                .chain()
                .decide(&ask(&id.principal, server, tool, Some("{}")));
            Outcome::enforce(verdict, id.workspace.enforce)
        };
        assert_eq!(decide("db", "query"), Outcome::Allowed, "{}", db.backend);
        assert_eq!(decide("web", "search"), Outcome::Allowed);
        // Enforcement starts off: a denial is a would-deny.
        assert!(matches!(decide("ci", "deploy"), Outcome::WouldDeny(d) if d.code == "not-granted"));
        store.enforce_set("acme", true).await.unwrap();
        dir.reload().await.unwrap();
        assert!(matches!(decide("ci", "deploy"), Outcome::Denied(_)));
        store
            .grant_add("acme", "alice", &["ci:deploy".into()])
            .await
            .unwrap();
        dir.reload().await.unwrap();
        assert_eq!(decide("ci", "deploy"), Outcome::Allowed);
        store
            .grant_remove("acme", "alice", &["db:*".into()])
            .await
            .unwrap();
        dir.reload().await.unwrap();
        assert!(matches!(decide("db", "query"), Outcome::Denied(_)));
        let grants: Vec<String> = store
            .grant_list("acme", Some("alice"))
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.pattern)
            .collect();
        assert_eq!(grants, ["*:search", "ci:deploy"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    for db in TestDb::all().await {
        let (store, _dir) = open(&db).await;
        store.workspace_create("acme").await.unwrap();
        store.workspace_create("other").await.unwrap();
        store.member_add("acme", "alice").await.unwrap();
        store
            .server_add("acme", "db", "http://127.0.0.1:9/mcp", vec![], None)
            .await
            .unwrap();
        let other_token = store.token_issue("other", None, None).await.unwrap();
        let before = snapshot(&store).await;

        let cases: Vec<(&str, store::Error)> = vec![
            (
                "duplicate workspace",
                store.workspace_create("acme").await.unwrap_err(),
            ),
            (
                "duplicate member",
                store.member_add("acme", "alice").await.unwrap_err(),
            ),
            (
                "duplicate server",
                store
                    .server_add("acme", "db", "http://x/mcp", vec![], None)
                    .await
                    .unwrap_err(),
            ),
            (
                "unknown workspace",
                store.member_add("nope", "bob").await.unwrap_err(),
            ),
            (
                "unknown member",
                store
                    .token_issue("acme", Some("ghost"), None)
                    .await
                    .unwrap_err(),
            ),
            (
                "unknown member grant",
                store
                    .grant_add("acme", "ghost", &["db:*".into()])
                    .await
                    .unwrap_err(),
            ),
            (
                "unknown token",
                store.token_revoke("tok_nope", None).await.unwrap_err(),
            ),
            (
                "token of another workspace",
                store
                    .token_revoke(&other_token.info.id, Some("acme"))
                    .await
                    .unwrap_err(),
            ),
            (
                "unknown grant",
                store
                    .grant_remove("acme", "alice", &["db:*".into()])
                    .await
                    .unwrap_err(),
            ),
            (
                "malformed pattern",
                store
                    .grant_add("acme", "alice", &["db:*".into(), "nocolon".into()])
                    .await
                    .unwrap_err(),
            ),
            (
                "pattern with spaces",
                store
                    .grant_add("acme", "alice", &["db:drop table".into()])
                    .await
                    .unwrap_err(),
            ),
            (
                "invalid url",
                store
                    .server_add("acme", "x", "not a url", vec![], None)
                    .await
                    .unwrap_err(),
            ),
            (
                "non-http url",
                store
                    .server_add("acme", "x", "file:///etc/passwd", vec![], None)
                    .await
                    .unwrap_err(),
            ),
            (
                "invalid server name",
                store
                    .server_add("acme", "Bad_Name", "http://x/mcp", vec![], None)
                    .await
                    .unwrap_err(),
            ),
            (
                "invalid workspace name",
                store.workspace_create("a b").await.unwrap_err(),
            ),
            (
                "invalid member name",
                store.member_add("acme", "").await.unwrap_err(),
            ),
            (
                "unknown workspace enforce",
                store.enforce_set("nope", true).await.unwrap_err(),
            ),
            (
                "bad header",
                store::parse_header("no colon here", false).unwrap_err(),
            ),
            (
                "bad header env",
                store::parse_header("Authorization: 1BAD", true).unwrap_err(),
            ),
            ("bad duration", store::parse_duration("30x").unwrap_err()),
            ("zero duration", store::parse_duration("0d").unwrap_err()),
        ];
        for (what, err) in &cases {
            let expected = match *what {
                w if w.starts_with("duplicate") => "duplicate",
                w if w.starts_with("unknown") || w.starts_with("token of") => "not_found",
                _ => "invalid",
            };
            assert_eq!(err.code(), expected, "{}: {what}: {err}", db.backend);
            assert!(
                !err.to_string().contains("mcpgw_"),
                "no token in error messages"
            );
        }
        assert_eq!(
            snapshot(&store).await,
            before,
            "{}: bad input changed nothing",
            db.backend
        );
    }
}

async fn snapshot(store: &Store) -> String {
    let mut out = format!("{:?}", store.workspace_list().await.unwrap());
    for ws in ["acme", "other"] {
        out += &format!(
            "{:?}{:?}{:?}{:?}",
            store.member_list(ws).await.unwrap(),
            store.server_list(ws).await.unwrap(),
            store.token_list(ws).await.unwrap(),
            store.grant_list(ws, None).await.unwrap()
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_holds_no_token_in_clear() {
    let db = TestDb::sqlite();
    let (store, _dir) = open(&db).await;
    store.workspace_create("acme").await.unwrap();
    store.member_add("acme", "alice").await.unwrap();
    let issued = store
        .token_issue("acme", Some("alice"), None)
        .await
        .unwrap();
    let hash = store::token_hash(&issued.token);
    let path = db.sqlite_path.clone().unwrap();
    let mut files = vec![path.clone()];
    files.extend(
        ["-wal", "-shm"]
            .iter()
            .map(|s| std::path::PathBuf::from(format!("{}{s}", path.display()))),
    );
    let mut all = Vec::new();
    for f in files.iter().filter(|f| f.exists()) {
        all.extend(std::fs::read(f).unwrap());
    }
    let haystack = String::from_utf8_lossy(&all);
    assert!(
        !haystack.contains(&issued.token),
        "token in clear in the database files"
    );
    assert!(
        !haystack.contains(&issued.token["mcpgw_".len()..]),
        "token body in clear"
    );
    assert!(
        haystack.contains(&hash["sha256:".len()..]),
        "the hash is what is stored"
    );
    if let Some(pg) = TestDb::postgres().await {
        let (store, _dir) = open(&pg).await;
        store.workspace_create("acme").await.unwrap();
        let issued = store.token_issue("acme", None, None).await.unwrap();
        let Db::Postgres(pool) = store.db() else {
            unreachable!()
        };
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT id, prefix, hash FROM tokens")
                .fetch_all(pool)
                .await
                .unwrap();
        let dump = format!("{rows:?}");
        assert!(!dump.contains(&issued.token) && dump.contains(&store::token_hash(&issued.token)));
    }
}

/// A change made through the store is seen by another process's watcher; here a second
/// `Directory` on its own pool stands in for that process (the cross-process test with two real
/// `mcpgw serve` processes is `gateway/tests/cluster.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_a_watching_directory_within_a_second() {
    for db in TestDb::all().await {
        let (store, _) = open(&db).await;
        store.workspace_create("acme").await.unwrap();
        store.member_add("acme", "alice").await.unwrap();
        let token = store
            .token_issue("acme", Some("alice"), None)
            .await
            .unwrap();
        let other_pool = Store::connect(&db.url).await.unwrap();
        let watcher = Directory::open(other_pool).await.unwrap();
        let _watch = watcher.watch();
        assert!(watcher.authenticate(&token.token).is_ok());

        // First an enforcement switch, which also proves the watcher is running...
        store.enforce_set("acme", true).await.unwrap();
        let took = wait_until_async(Duration::from_secs(2), || {
            watcher
                .snapshot()
                .workspace("acme")
                .is_some_and(|w| w.enforce)
        })
        .await;
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(1)),
            "{}: enforcement switch {took:?}",
            db.backend
        );

        // ...then the revocation, timed from the write to the first refusal.
        let started = Instant::now();
        store.token_revoke(&token.info.id, None).await.unwrap();
        let took = wait_until_async(Duration::from_secs(2), || {
            watcher.authenticate(&token.token).is_err()
        })
        .await
        .unwrap_or_else(|| panic!("{}: revocation never reached the watcher", db.backend));
        eprintln!(
            "{}: revocation seen by another directory after {:?}",
            db.backend,
            started.elapsed()
        );
        assert!(took < Duration::from_secs(1), "{}: {took:?}", db.backend);
    }
}

/// Backdates a token's expiry, as if its lifetime had run out.
async fn expire_now(store: &Store, id: &str) {
    let sql = "UPDATE tokens SET expires_ms = 1 WHERE id = $1";
    match store.db() {
        Db::Sqlite(p) => sqlx::query(sql).bind(id).execute(p).await.map(|_| ()),
        Db::Postgres(p) => sqlx::query(sql).bind(id).execute(p).await.map(|_| ()),
    }
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_import_is_checked_whole_then_written_in_batches() {
    use mcpgw::store::import::{ImportRow, parse};
    for db in TestDb::all().await {
        let (store, dir) = open(&db).await;
        store.workspace_create("acme").await.unwrap();
        store
            .role_create("acme", "db-readers", &["db:query".into()])
            .await
            .unwrap();
        store.member_add("acme", "carol").await.unwrap();
        store
            .grant_add("acme", "carol", &["web:*".into()])
            .await
            .unwrap();
        let rows = parse(
            "member,grants,roles\nalice,ci:status,db-readers\nbob,,\ncarol,ci:deploy,db-readers\n",
            false,
        )
        .unwrap();

        // One bad row (a role that does not exist): nothing at all is written.
        let mut bad = rows.clone();
        bad.push(ImportRow {
            member: "dave".into(),
            grants: vec![],
            roles: vec!["nope".into()],
        });
        let e = store
            .member_import("acme", &bad, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 4") && e.contains("nope"), "{e}");
        assert_eq!(store.member_list("acme").await.unwrap().len(), 1);
        let twice = [rows[0].clone(), rows[0].clone()];
        assert!(store.member_import("acme", &twice, None).await.is_err());

        let report = store
            .member_import("acme", &rows, Some(None))
            .await
            .unwrap();
        assert_eq!((report.created, report.existing), (2, 1), "{}", db.backend);
        assert_eq!(report.tokens.len(), 3);
        dir.reload().await.unwrap();
        let grants = |token: &str| dir.authenticate(token).unwrap().principal.grants.clone();
        assert_eq!(grants(&report.tokens[0].token), ["ci:status", "db:query"]);
        assert!(grants(&report.tokens[1].token).is_empty());
        assert_eq!(
            grants(&report.tokens[2].token),
            ["ci:deploy", "db:query", "web:*"],
            "an existing member keeps what they had and gains what is listed"
        );
        // Again: nothing new, nothing lost.
        let again = store.member_import("acme", &rows, None).await.unwrap();
        assert_eq!((again.created, again.existing), (0, 3));
        assert_eq!(store.member_list("acme").await.unwrap().len(), 3);

        // Onboarding an organisation: 10,000 members, each with a grant, a role and a token.
        let many: Vec<ImportRow> = (0..10_000)
            .map(|i| ImportRow {
                member: format!("user{i:05}@example.com"),
                grants: vec![format!("team{}:*", i % 50)],
                roles: vec!["db-readers".into()],
            })
            .collect();
        let started = Instant::now();
        let report = store
            .member_import("acme", &many, Some(None))
            .await
            .unwrap();
        let took = started.elapsed();
        dir.reload().await.unwrap();
        eprintln!(
            "{}: imported 10,000 members with a grant, a role and a token in {took:?}",
            db.backend
        );
        assert_eq!(report.created, 10_000);
        assert!(took < Duration::from_secs(60), "{}: {took:?}", db.backend);
        let last = &report.tokens[9_999];
        assert_eq!(
            dir.authenticate(&last.token).unwrap().principal.grants,
            ["db:query", "team49:*"]
        );
    }
}

/// The snapshot follows the store through the identity journal one change at a time: after
/// every kind of change (workspace, server, enforcement, identity provider, member, grant, role,
/// role grant, assignment, disable, token issue and revoke, deletes that cascade) the caught-up
/// snapshot describes exactly what a snapshot built whole from the store describes; a caller the
/// change does not concern keeps the very same `Identity` (shared, not rebuilt); and a directory
/// further behind than the pruned journal reaches rebuilds whole and is right too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_caught_up_change_by_change_equals_one_built_whole() {
    for db in TestDb::all().await {
        let (store, dir) = open(&db).await;
        let lagging = Directory::open(store.clone()).await.unwrap();
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        store.workspace_create("acme").await.unwrap();
        store.workspace_create("other").await.unwrap();
        store.member_add("other", "zed").await.unwrap();
        let zed = store.token_issue("other", Some("zed"), None).await.unwrap();
        dir.reload().await.unwrap();
        let zed_before = dir.authenticate(&zed.token).unwrap();

        let check = |step: &'static str| {
            let (db, dir, store, zed) = (&db, &dir, &store, &zed);
            let zed_before = zed_before.clone();
            async move {
                dir.reload().await.unwrap();
                let whole = Directory::open(store.clone()).await.unwrap();
                assert_eq!(
                    dir.snapshot().describe(),
                    whole.snapshot().describe(),
                    "{}: after {step}",
                    db.backend
                );
                if !step.starts_with("other:") {
                    assert!(
                        std::sync::Arc::ptr_eq(&zed_before, &dir.authenticate(&zed.token).unwrap()),
                        "{}: {step} rebuilt an unrelated caller",
                        db.backend
                    );
                }
            }
        };
        store
            .server_add("acme", "db", "http://127.0.0.1:1/mcp", vec![], None)
            .await
            .unwrap();
        check("server add").await;
        store.member_add("acme", "alice").await.unwrap();
        store.member_add("acme", "bob").await.unwrap();
        check("member add").await;
        let alice = store
            .token_issue("acme", Some("alice"), None)
            .await
            .unwrap();
        let alice2 = store
            .token_issue("acme", Some("alice"), Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        let bob = store.token_issue("acme", Some("bob"), None).await.unwrap();
        let system = store.token_issue("acme", None, None).await.unwrap();
        check("token issue").await;
        store
            .grant_add("acme", "alice", &s(&["db:query"]))
            .await
            .unwrap();
        check("grant add").await;
        store
            .role_create("acme", "ops", &s(&["ci:*"]))
            .await
            .unwrap();
        check("role create").await;
        store.role_assign("acme", "alice", "ops").await.unwrap();
        store.role_assign("acme", "bob", "ops").await.unwrap();
        check("role assign").await;
        assert_eq!(
            dir.authenticate(&bob.token).unwrap().principal.grants,
            s(&["ci:*"])
        );
        store
            .role_grant("acme", "ops", &s(&["db:schema"]))
            .await
            .unwrap();
        check("role grant").await;
        assert_eq!(
            dir.authenticate(&alice2.token).unwrap().principal.grants,
            s(&["ci:*", "db:query", "db:schema"])
        );
        store
            .role_revoke("acme", "ops", &s(&["ci:*"]))
            .await
            .unwrap();
        check("role revoke").await;
        store.role_unassign("acme", "bob", "ops").await.unwrap();
        check("role unassign").await;
        store
            .member_set_disabled("acme", "alice", true)
            .await
            .unwrap();
        check("disable").await;
        assert_eq!(
            dir.authenticate(&alice.token).unwrap_err(),
            AuthError::Disabled
        );
        store
            .member_set_disabled("acme", "alice", false)
            .await
            .unwrap();
        check("enable").await;
        store.enforce_set("acme", true).await.unwrap();
        check("enforce").await;
        assert!(dir.authenticate(&system.token).unwrap().workspace.enforce);
        store.token_revoke(&alice.info.id, None).await.unwrap();
        check("token revoke").await;
        assert_eq!(
            dir.authenticate(&alice.token).unwrap_err(),
            AuthError::Invalid
        );
        assert!(dir.authenticate(&alice2.token).is_ok());
        store
            .grant_remove("acme", "alice", &s(&["db:query"]))
            .await
            .unwrap();
        check("grant remove").await;
        store.role_delete("acme", "ops").await.unwrap();
        check("role delete").await;
        store.member_remove("acme", "bob").await.unwrap();
        check("member remove").await;
        assert_eq!(
            dir.authenticate(&bob.token).unwrap_err(),
            AuthError::Invalid
        );
        store
            .idp_set(
                "acme",
                &store::IdpConfig {
                    issuer: "https://idp.example".into(),
                    audience: "https://gw.example/mcp".into(),
                    member_claim: "sub".into(),
                    groups_claim: None,
                    role_map: vec![],
                    auto_create: false,
                    scopes: vec![],
                    ca_file: None,
                },
            )
            .await
            .unwrap();
        check("idp set").await;

        // Far behind: the journal was pruned past the lagging directory's position.
        store.identity_prune(store::now_ms() + 1).await.unwrap();
        store.member_add("acme", "carol").await.unwrap();
        lagging.reload().await.unwrap();
        dir.reload().await.unwrap();
        assert_eq!(
            lagging.snapshot().describe(),
            dir.snapshot().describe(),
            "{}",
            db.backend
        );
        check("prune").await;

        store.workspace_delete("other").await.unwrap();
        check("other: workspace delete").await;
        assert_eq!(
            dir.authenticate(&zed.token).unwrap_err(),
            AuthError::Invalid
        );
    }
}
