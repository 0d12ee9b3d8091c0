//! Fails when `src/proto/im.v1.rs` is stale with respect to `proto/im.proto`.
//!
//! Regenerate with `IM_REGEN_PROTO=1 cargo test -p im-core --test proto_fresh`.

use std::path::Path;

#[test]
fn generated_code_matches_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile([root.join("proto/im.proto")], [root.join("proto")])
        .expect("im.proto compiles");
    let out = std::env::temp_dir().join(format!("im-proto-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    prost_build::Config::new()
        .bytes(["."])
        .out_dir(&out)
        .compile_fds(fds)
        .expect("prost-build generates code");
    let fresh = std::fs::read_to_string(out.join("im.v1.rs")).expect("generated file");
    let _ = std::fs::remove_dir_all(&out);
    let checked_in_path = root.join("src/proto/im.v1.rs");
    if std::env::var_os("IM_REGEN_PROTO").is_some() {
        std::fs::write(&checked_in_path, &fresh).expect("write generated code");
        return;
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "im-core/src/proto/im.v1.rs is stale; run: IM_REGEN_PROTO=1 cargo test -p im-core --test proto_fresh"
    );
}
