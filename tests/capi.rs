//! The C ABI from C: `tests/c/capi_test.c` is compiled with the system C
//! compiler against `include/pagepool.h` and a `libpagepool.a` built with
//! `cargo rustc --crate-type staticlib`, run, and must report every check
//! passed. `tests/c/diag_test.c`
//! runs one diagnostic case per process (crash cases die of their signal),
//! checked by the `c_*` tests for their exit and report. Another test keeps the
//! header and `src/capi.rs` (with `src/capi/`) in agreement (names, argument counts, codes).
#![cfg(feature = "capi")]

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

/// A `libpagepool.a` with the C ABI in it, built as a C program's build
/// would (the crate itself is an rlib only): `cargo rustc --lib
/// --crate-type staticlib --features capi`, in a target directory of this
/// test's own so the test's own build is not disturbed; once per test run.
fn static_library() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/capi-test");
        let status = Command::new(env!("CARGO"))
            .args([
                "rustc",
                "-p",
                "pagepool",
                "--lib",
                "--no-default-features",
                "--features",
                "capi",
                "--crate-type",
                "staticlib",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the staticlib failed");
        let lib = target.join("debug/libpagepool.a");
        let symbol = b"pagepool_allocator_create";
        let bytes = std::fs::read(&lib).expect("the staticlib");
        assert!(
            bytes.windows(symbol.len()).any(|w| w == symbol),
            "{} lacks the C ABI",
            lib.display()
        );
        lib
    })
    .clone()
}

/// Compiles `tests/c/<source>` against the header and the static library
/// into `exe` in cargo's temporary directory for tests; returns its path.
fn compile(source: &str, exe: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = static_library();
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join(exe);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-pthread",
        ])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c").join(source))
        .arg(&lib)
        // What Rust's standard library needs from the system (see
        // `cargo rustc --crate-type staticlib -- --print native-static-libs`).
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(status.success(), "{source} did not compile");
    exe
}

#[test]
fn a_c_program_runs_every_function_and_error_path() {
    let exe = compile("capi_test.c", "capi_test");
    let run = Command::new(&exe).output().expect("run the C test program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the C checks failed ({:?}):\n{stdout}\n{stderr}",
        run.status
    );
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("capi: ")?.strip_suffix(" checks passed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(passed >= 100, "only {passed} checks ran");
    println!("capi: {passed} checks passed in C");
}

/// The header on its own compiles cleanly as strict C99 and C++11 (a C++
/// media stack includes it too).
#[test]
fn the_header_compiles_as_c99_and_cxx11() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("pagepool-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (compiler, std, ext) in [("cc", "-std=c99", "c"), ("c++", "-std=c++11", "cpp")] {
        let src = dir.join(format!("use.{ext}"));
        std::fs::write(
            &src,
            "#include \"pagepool.h\"\nint main(void) { pagepool_stats s; (void)s; \
             return pagepool_allocator_destroy(0) == E_HANDLE ? 0 : 1; }\n",
        )
        .unwrap();
        let status = Command::new(compiler)
            .args([
                std,
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-fsyntax-only",
            ])
            .arg("-I")
            .arg(root.join("include"))
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
        assert!(status.success(), "{compiler} {std} rejects the header");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `name(` → number of parameters, for every `pagepool_*` function declared
/// or defined in `text` (C prototypes or Rust `extern "C" fn`s).
fn functions(text: &str, marker: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let name_end = after.find('(').expect("a parameter list");
        let name = format!("pagepool_{}", &after[..name_end]);
        let params = &after[name_end + 1..after.find(')').expect("closed")];
        let n = if params.trim().is_empty() || params.trim() == "void" {
            0
        } else {
            params.split(',').filter(|p| !p.trim().is_empty()).count()
        };
        out.insert(name, n);
        rest = &after[name_end..];
    }
    out
}

/// `#define NAME ((HRESULT)0x...)` values in the header.
fn header_codes(header: &str) -> BTreeMap<String, u32> {
    header
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("#define ")?;
            let (name, value) = l.split_once(' ')?;
            let hex = value.split("0x").nth(1)?.trim_end_matches(')');
            Some((name.to_owned(), u32::from_str_radix(hex, 16).ok()?))
        })
        .collect()
}

/// `src/capi.rs` and every file under `src/capi/`, concatenated.
fn capi_sources(root: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("src/capi"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    files.insert(0, root.join("src/capi.rs"));
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// `#define PAGEPOOL_NAME value` constants in the header (decimal).
fn header_constants(header: &str) -> BTreeMap<String, i64> {
    header
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("#define PAGEPOOL_")?;
            let (name, value) = l.split_once(' ')?;
            let value = value.split("/*").next()?.trim();
            let value = value.trim_start_matches('(').trim_end_matches(')');
            Some((format!("PAGEPOOL_{name}"), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_header_matches_the_rust_functions_and_codes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("include/pagepool.h")).unwrap();
    let rust = capi_sources(root);
    let declared = functions(&header, "HRESULT pagepool_");
    let exported = functions(&rust, "extern \"C\" fn pagepool_");
    assert_eq!(declared, exported, "header vs src/capi.rs and src/capi/");
    assert_eq!(declared.len(), 21);
    // Every exported function is `#[unsafe(no_mangle)]` (the plain
    // allocation and release calls twice: naked, or not, by `cfg`).
    assert_eq!(
        rust.matches("#[unsafe(no_mangle)]").count(),
        rust.matches("extern \"C\" fn pagepool_").count()
    );
    assert_eq!(
        rust.matches("extern \"C\" fn pagepool_").count(),
        exported.len() + 3
    );

    use pagepool::capi::*;
    let codes = header_codes(&header);
    let expected = [
        ("S_OK", S_OK),
        ("E_POINTER", E_POINTER),
        ("E_HANDLE", E_HANDLE),
        ("E_INVALIDARG", E_INVALIDARG),
        ("E_OUTOFMEMORY", E_OUTOFMEMORY),
        ("E_FAIL", E_FAIL),
        ("E_UNEXPECTED", E_UNEXPECTED),
    ];
    assert_eq!(codes.len(), expected.len(), "{codes:?}");
    for (name, value) in expected {
        assert_eq!(codes.get(name), Some(&(value as u32)), "{name}");
    }
    // Every `#define PAGEPOOL_*` constant has the value of its Rust twin.
    let constants = header_constants(&header);
    let rust_constants: BTreeMap<String, i64> = rust
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub const PAGEPOOL_")?;
            let (name, rest) = l.split_once(':')?;
            let value = rest.split('=').nth(1)?.trim().trim_end_matches(';');
            Some((format!("PAGEPOOL_{name}"), value.parse().ok()?))
        })
        .collect();
    assert_eq!(constants, rust_constants, "header vs Rust constants");
    assert_eq!(constants.len(), 16, "{constants:?}");
    // The config struct: the same size and field count in both.
    assert_eq!(std::mem::size_of::<pagepool_config>(), 64);
    let fields = header
        .split("typedef struct pagepool_config {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .unwrap();
    let declared = fields
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|t| t.ends_with("_t"))
        })
        .count();
    assert_eq!(declared, 13, "{fields}");
    // The extended stats: the same size, 2 u32 and 12 u64 fields.
    assert_eq!(std::mem::size_of::<pagepool_stats_ex>(), 8 + 12 * 8);
    let fields = header
        .split("typedef struct pagepool_stats_ex {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .unwrap();
    assert_eq!(fields.matches("uint64_t ").count(), 12);
    assert_eq!(fields.matches("uint32_t ").count(), 2);
    // The stats struct: six u64 fields in both.
    assert_eq!(std::mem::size_of::<pagepool_stats>(), 6 * 8);
    let fields = header
        .split("typedef struct pagepool_stats {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .unwrap();
    assert_eq!(fields.matches("uint64_t ").count(), 6);
}

/// `tests/c/diag_test.c`, compiled once for every test that runs a case.
fn diag_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("diag_test.c", "diag_test"))
}

/// `<root>/tests/c/diag_test.c:LINE (func)`, as reports print the C site of the
/// line marked `/* site: name */` in function `func`.
fn site(name: &str, func: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("tests/c/diag_test.c")).unwrap();
    let marker = format!("/* site: {name} */");
    let mut lines = source
        .lines()
        .enumerate()
        .filter(|(_, l)| l.ends_with(&marker));
    let (i, _) = lines.next().unwrap_or_else(|| panic!("no {marker}"));
    assert!(lines.next().is_none(), "{marker} twice");
    // The path as `compile` gives it to cc, so as `__FILE__` spells it.
    let file = root.join("tests/c/diag_test.c");
    format!("{}:{} ({func})", file.display(), i + 1)
}

/// What one run of a `diag_test` case did.
struct Case {
    name: &'static str,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Case {
    /// Runs case `name` in a process of its own.
    fn run(name: &'static str) -> Case {
        let out = Command::new(diag_exe())
            .arg(name)
            .output()
            .expect("run diag_test");
        Case {
            name,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "case {}: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name, self.status, self.stdout, self.stderr
        )
    }

    /// Asserts the case ran to its end.
    fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success() && self.stdout.contains(&format!("diag: {} ok", self.name)),
            "{}",
            self.describe()
        );
        self
    }

    /// Asserts the case died of `signal` at the access meant to fault.
    fn assert_signal(&self, signal: i32) -> &Self {
        assert_eq!(self.status.signal(), Some(signal), "{}", self.describe());
        assert!(
            self.stdout.contains("diag: faulting"),
            "{}",
            self.describe()
        );
        self
    }

    /// Asserts stderr holds every one of `texts`.
    fn assert_stderr(&self, texts: &[&str]) -> &Self {
        for t in texts {
            assert!(self.stderr.contains(t), "no {t:?}\n{}", self.describe());
        }
        self
    }

    /// Asserts stderr names `site(name, func)` right after `before`.
    fn assert_site(&self, before: &str, name: &str, func: &str) -> &Self {
        self.assert_stderr(&[&format!("{before}{}", site(name, func))])
    }
}

#[test]
fn c_config_is_checked_and_applied() {
    Case::run("config").assert_ok();
}

#[test]
fn c_write_to_the_next_page_is_reported_by_the_fault_handler() {
    Case::run("next_page")
        .assert_signal(libc::SIGSEGV)
        .assert_stderr(&["heap-buffer-overflow", "\"c-next-page\""])
        .assert_site("allocated at ", "next_page", "next_page");
}

#[test]
fn c_write_one_byte_before_is_reported_by_the_fault_handler() {
    Case::run("byte_before")
        .assert_signal(libc::SIGSEGV)
        .assert_stderr(&[
            "heap-buffer-underflow",
            "1 byte(s) before it",
            "\"c-before\"",
        ])
        .assert_site("allocated at ", "byte_before", "byte_before");
}

#[test]
fn c_write_after_release_into_the_quarantine_faults() {
    Case::run("quarantined")
        .assert_signal(libc::SIGSEGV)
        .assert_stderr(&["use-after-release", "\"c-quarantine\"", "offset 100"])
        .assert_site("allocated at ", "quarantined", "quarantined")
        .assert_site("released at ", "quarantined_release", "quarantined");
}

#[test]
fn c_16_mib_buffer_is_whole_and_guarded() {
    Case::run("big_buffer")
        .assert_signal(libc::SIGSEGV)
        .assert_stderr(&["heap-buffer-overflow", "\"c-16mib\"", "max_len 16777216"])
        .assert_site("allocated at ", "big_buffer", "big_buffer");
}

#[test]
fn c_write_past_max_len_is_counted_and_reported() {
    Case::run("past_max_len")
        .assert_ok()
        .assert_stderr(&[
            "pagepool: write past max_len (slack canary damaged) in pool \"c-past-max\"",
            "max_len 100, slot 4096 bytes; 1 byte damaged, the first at offset 100 (0 past max_len)",
        ])
        .assert_site("; allocated at ", "past_max_len", "past_max_len");
}

#[test]
fn c_leaks_are_reported_at_destroy_and_on_request() {
    let case = Case::run("leak");
    case.assert_ok().assert_stderr(&[
        "pagepool: the last handle of pool \"c-leak\" was dropped with buffers still out:",
        "pagepool \"c-leak\": 3 buffers (12288 bytes) outstanding for at least 0ns, from 3 sites",
        "1 buffer          4096 bytes",
    ]);
    for name in ["leak_a", "leak_b", "leak_c"] {
        case.assert_stderr(&[&site(name, "leak")]);
    }
    // The report the C program asked for, printed to its stdout.
    assert!(
        case.stdout
            .contains("pagepool \"c-leak\": 2 buffers (8192 bytes)")
            && case.stdout.contains(&site("leak_b", "leak")),
        "{}",
        case.describe()
    );
}

#[test]
fn c_report_callback_gets_kind_text_and_address() {
    let case = Case::run("callback");
    case.assert_ok()
        .assert_stderr(&["\"c-cb\"", "offset 200 (0 past max_len)"]);
    assert!(!case.stderr.contains("offset 101"), "{}", case.describe());
}

#[test]
fn c_corruption_with_abort_reports_once_then_aborts() {
    let case = Case::run("abort_on_corruption");
    case.assert_signal(libc::SIGABRT)
        .assert_stderr(&["write past max_len", "\"c-abort\""]);
    assert_eq!(
        case.stderr.matches("write past max_len").count(),
        1,
        "{}",
        case.describe()
    );
}

#[test]
fn c_writes_into_red_zones_are_counted_and_reported() {
    let what = "write outside the slot (red zone or edge canary damaged)";
    Case::run("red_zone_before")
        .assert_ok()
        .assert_stderr(&[
            what,
            "\"c-rz-before\"",
            "max_len 64, slot 64 bytes; 1 byte damaged, the first at offset -1",
        ])
        .assert_site("; allocated at ", "red_zone", "red_zone");
    Case::run("red_zone_after")
        .assert_ok()
        .assert_stderr(&[
            what,
            "\"c-rz-after\"",
            "max_len 64, slot 64 bytes; 1 byte damaged, the first at offset 64",
        ])
        .assert_site("; allocated at ", "red_zone", "red_zone");
}

#[test]
fn c_write_after_release_is_caught_by_sampled_poison() {
    Case::run("poison_sampled")
        .assert_ok()
        .assert_stderr(&[
            "pagepool: write after release (poison damaged) in pool \"c-poison\"",
            "1 byte damaged, the first at offset 10",
        ])
        .assert_site("; allocated at ", "poison", "poison_sampled")
        .assert_site("; released at ", "poison_release", "poison_sampled")
        .assert_stderr(&["(poison_sampled) on thread "]);
}

#[test]
fn c_double_release_is_reported_with_the_buffer_it_was() {
    Case::run("double_release")
        .assert_ok()
        .assert_stderr(&[
            "pagepool: pagepool_buffer_release with stale buffer handle 0x",
            "(a double release); it was buffer 0x",
            "of pool \"c-double\", max_len 4096; allocated at ",
        ])
        .assert_site("; allocated at ", "double", "double_release")
        .assert_site(
            "; released by its last pagepool_buffer_release at ",
            "double_release",
            "double_release",
        );
}

#[test]
fn c_write_after_release_from_another_thread_faults_there() {
    Case::run("other_thread")
        .assert_signal(libc::SIGSEGV)
        .assert_stderr(&["use-after-release", "\"c-thread\"", "offset 8"])
        .assert_site("allocated at ", "other_thread", "other_thread")
        .assert_site("released at ", "other_thread_release", "other_thread");
}

#[test]
fn c_plain_calls_record_return_addresses() {
    let case = Case::run("plain_calls");
    case.assert_ok().assert_stderr(&[
        "pagepool_buffer_release with stale buffer handle",
        "of pool \"c-plain\", max_len 4096; allocated at return address 0x",
        "; released by its last pagepool_buffer_release at return address 0x",
    ]);
    // dladdr names the object the address is in (the test executable,
    // whose symbols are not dynamic: no function name) and the offset.
    let leak = &case.stdout;
    assert!(
        leak.contains("pagepool \"c-plain\": 2 buffers")
            && leak.matches("return address 0x").count() == 2
            && leak.contains("diag_test+0x")
            && leak.contains("(allocation site not tracked)"),
        "{}",
        case.describe()
    );
}
