//! Live progress on a terminal for `once` and `check` (indicatif): one line per running step —
//! `sync[N] source -> target`, images done of selected (`?` until the step's listing is done),
//! bytes copied and throughput — and one total line, below the log.
//!
//! The display only reads the counters the engine keeps for each step run ([`Counters`]: the
//! tag lister counts a step started, its selected images, its listing done, the step ended):
//! a thread of its own polls their snapshots a few times a second, so no actor calls into it.
//! Every draw happens on that thread or on the log writer thread, whose lines go through
//! [`Overlay::suspend`] (the bars are taken off, the lines written, the bars drawn again
//! below): a terminal that stops reading blocks those two threads only, never the copies, and
//! the end of the run waits for the display at most [`FINISH_WAIT`].
//!
//! The display is taken down (cleared) once every step has ended, before the next log line —
//! the run's `Sync summary` — is written; else when the run ends (a signal). Each step's final
//! numbers are drawn once when it ends, so a short run shows them too.

use crate::copy::counters::{CountSnapshot, Counter, Counters};
use crate::log::Overlay;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How often the counters are read.
const POLL: Duration = Duration::from_millis(200);
/// At most this many draws a second (indicatif's rate limit).
const DRAW_HZ: u8 = 10;
/// Step lines shown at once; more running steps are counted on the total line only. A step
/// that ended keeps its line until the room is needed.
const MAX_STEP_LINES: usize = 10;
/// How long the end of the run waits for the display to take itself down.
const FINISH_WAIT: Duration = Duration::from_secs(2);
/// Throughput is measured over this much of the recent past.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Whether `once`/`check` show progress: `--progress` (default true), text logs, not
/// `server` (a daemon's stderr is a journal), and stderr is a terminal.
pub fn wanted(flag: bool, json_logs: bool, serving: bool) -> bool {
    flag && !json_logs && !serving && std::io::stderr().is_terminal()
}

/// One step as the display names and reads it.
pub struct StepSource {
    /// `sync[N] source -> target`
    pub name: String,
    /// The step run's own counters.
    pub counters: Arc<Counters>,
}

impl StepSource {
    pub fn new(index: usize, source: &str, target: &str, counters: Arc<Counters>) -> StepSource {
        StepSource {
            name: format!("sync[{index}] {source} -> {target}"),
            counters,
        }
    }
}

/// The display of one run. Create it before the logger (its [`overlay`](Progress::overlay)
/// is how log lines get above the bars), [`watch`](Progress::watch) the run's steps, and
/// [`finish`](Progress::finish) when the run ends (also on drop).
pub struct Progress {
    display: Arc<Display>,
    poller: Option<Poller>,
}

struct Poller {
    stop: mpsc::Sender<()>,
    /// Disconnected when the poll thread has ended.
    done: mpsc::Receiver<()>,
}

impl Progress {
    /// A display on stderr; `None` when indicatif would not draw there (not a terminal,
    /// `TERM` unset or `dumb`).
    pub fn stderr() -> Option<Progress> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(DRAW_HZ));
        if multi.is_hidden() {
            return None;
        }
        Some(Progress::on(multi))
    }

    fn on(multi: MultiProgress) -> Progress {
        Progress {
            display: Arc::new(Display {
                multi,
                steps: OnceLock::new(),
                state: Mutex::default(),
            }),
            poller: None,
        }
    }

    /// Where the log writer sends its lines.
    pub fn overlay(&self) -> Arc<dyn Overlay> {
        self.display.clone()
    }

    /// Shows `steps` of the run whose counters are `total`, until [`finish`](Self::finish).
    /// Everything, setting up included, happens on the display's thread: the caller never
    /// waits for a terminal.
    pub fn watch(&mut self, total: Arc<Counters>, steps: Vec<StepSource>) {
        if self.poller.is_some() {
            return;
        }
        let (stop, stopped) = mpsc::channel();
        let (ended, done) = mpsc::channel::<()>();
        // Known before the thread runs: a run can end, and log its summary, before the thread
        // has set anything up, and that summary must still find the display taken down.
        self.display.expect(&steps);
        let display = self.display.clone();
        let spawned = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let _ended = ended;
                display.lock().watch(&display.multi, total, steps);
                loop {
                    display.update();
                    match stopped.recv_timeout(POLL) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                display.take_down();
            });
        if spawned.is_ok() {
            self.poller = Some(Poller { stop, done });
        }
    }

    /// Takes the display down (final numbers, then cleared), waiting at most [`FINISH_WAIT`]
    /// for a terminal that does not read.
    pub fn finish(&mut self) {
        if let Some(p) = self.poller.take() {
            let _ = p.stop.send(());
            let _ = p.done.recv_timeout(FINISH_WAIT);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Display {
    multi: MultiProgress,
    /// The counters of the watched run's steps, set by the caller of
    /// [`watch`](Progress::watch) (not the poll thread), so the end of the run is seen however
    /// late the thread starts.
    steps: OnceLock<Vec<Arc<Counters>>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: Option<TotalLine>,
    steps: Vec<StepLine>,
    /// Indices of steps whose line is shown and who have ended, oldest first.
    finished: VecDeque<usize>,
    /// Taken down: nothing is drawn any more.
    down: bool,
}

struct TotalLine {
    counters: Arc<Counters>,
    bar: ProgressBar,
    started: Instant,
    rate: Rate,
}

struct StepLine {
    name: String,
    counters: Arc<Counters>,
    bar: Option<ProgressBar>,
    /// The bar has its length (the listing is done).
    sized: bool,
    /// When the display first saw the step started, and ended.
    started: Option<Instant>,
    ended: Option<Instant>,
    rate: Rate,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid progress template")
}

/// A step still listing: a spinner, no bar.
fn listing_style() -> ProgressStyle {
    style("{spinner} {wide_msg} {prefix}")
}

/// A step whose listing is done: images done of selected.
fn sized_style() -> ProgressStyle {
    style("{spinner} {wide_msg} [{bar:16}] {prefix}").progress_chars("=> ")
}

impl Display {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The run being watched has `steps`.
    fn expect(&self, steps: &[StepSource]) {
        let _ = self
            .steps
            .set(steps.iter().map(|s| s.counters.clone()).collect());
    }

    /// Every step of the watched run has ended.
    fn all_ended(&self) -> bool {
        self.steps
            .get()
            .is_some_and(|steps| steps.iter().all(|c| c.get(Counter::StepsEnded) > 0))
    }

    fn update(&self) {
        let mut state = self.lock();
        state.update(&self.multi, Instant::now());
    }

    fn take_down(&self) {
        let mut state = self.lock();
        state.take_down(&self.multi);
    }
}

impl Overlay for Display {
    fn suspend(&self, write: &mut dyn FnMut()) {
        let mut state = self.lock();
        if !state.down && self.all_ended() {
            // The run is over: the display goes before the lines that close it.
            state.take_down(&self.multi);
        }
        if state.down {
            write();
        } else {
            self.multi.suspend(write);
        }
    }
}

impl State {
    fn watch(&mut self, multi: &MultiProgress, total: Arc<Counters>, steps: Vec<StepSource>) {
        if self.down {
            // The run ended, and the display was taken down, before this thread got here.
            return;
        }
        let bar = multi.add(ProgressBar::no_length().with_style(style("total  {msg}")));
        self.total = Some(TotalLine {
            counters: total,
            bar,
            started: Instant::now(),
            rate: Rate::default(),
        });
        self.steps = steps
            .into_iter()
            .map(|s| StepLine {
                name: s.name,
                counters: s.counters,
                bar: None,
                sized: false,
                started: None,
                ended: None,
                rate: Rate::default(),
            })
            .collect();
    }

    fn shown(&self) -> usize {
        self.steps.iter().filter(|s| s.bar.is_some()).count()
    }

    /// Room for one more step line: drops the oldest ended one when the lines are full.
    fn make_room(&mut self, multi: &MultiProgress) -> bool {
        if self.shown() < MAX_STEP_LINES {
            return true;
        }
        match self.finished.pop_front() {
            Some(i) => {
                if let Some(bar) = self.steps[i].bar.take() {
                    multi.remove(&bar);
                }
                true
            }
            None => false,
        }
    }

    fn update(&mut self, multi: &MultiProgress, now: Instant) {
        if self.down {
            return;
        }
        let Some(total_bar) = self.total.as_ref().map(|t| t.bar.clone()) else {
            return;
        };
        let n = self.steps.len();
        if let Some(t) = &mut self.total {
            let c = t.counters.snapshot();
            let rate = t.rate.sample(now, c.bytes_copied);
            t.bar
                .set_message(total_numbers(&c, n, rate, now - t.started));
        }
        for i in 0..n {
            let c = self.steps[i].counters.snapshot();
            if c.steps_started == 0 {
                continue;
            }
            if self.steps[i].bar.is_none() {
                if self.steps[i].ended.is_some() || !self.make_room(multi) {
                    // No line free now, or it ended while none was: the total counts it.
                    if c.steps_ended > 0 {
                        self.steps[i].ended.get_or_insert(now);
                    }
                    continue;
                }
                // Everything set before it is drawn for the first time.
                let bar = ProgressBar::no_length()
                    .with_style(listing_style())
                    .with_message(self.steps[i].name.clone())
                    .with_prefix(step_numbers(&c, None));
                self.steps[i].bar = Some(multi.insert_before(&total_bar, bar));
            }
            let line = &mut self.steps[i];
            let started = *line.started.get_or_insert(now);
            let Some(bar) = &line.bar else { continue };
            if c.steps_listed > 0 {
                bar.set_length(c.images_selected);
                if !line.sized {
                    bar.set_style(sized_style());
                    line.sized = true;
                }
            }
            bar.set_position(c.images_checked);
            if c.steps_ended > 0 && line.ended.is_none() {
                // Its final numbers (the average rate), drawn now whatever the draw rate.
                line.ended = Some(now);
                bar.set_prefix(step_numbers(&c, average(c.bytes_copied, now - started)));
                bar.abandon();
                self.finished.push_back(i);
            } else if line.ended.is_none() {
                bar.set_prefix(step_numbers(&c, line.rate.sample(now, c.bytes_copied)));
                bar.tick();
            }
        }
        if let Some(t) = &self.total {
            t.bar.tick();
        }
    }

    /// The last numbers, drawn once, then every line cleared for good.
    fn take_down(&mut self, multi: &MultiProgress) {
        if self.down {
            return;
        }
        self.update(multi, Instant::now());
        self.down = true;
        if let Some(t) = &self.total {
            t.bar.abandon();
        }
        let _ = multi.clear();
        multi.set_draw_target(ProgressDrawTarget::hidden());
        self.total = None;
        for s in &mut self.steps {
            s.bar = None;
        }
        self.finished.clear();
    }
}

/// Bytes per second over the last [`RATE_WINDOW`] of samples.
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    fn sample(&mut self, now: Instant, bytes: u64) -> Option<f64> {
        self.samples.push_back((now, bytes));
        while self.samples.len() > 2 && now - self.samples[0].0 > RATE_WINDOW {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        average(bytes.saturating_sub(b0), now - t0)
    }
}

/// Bytes per second, when the time is long enough to say.
fn average(bytes: u64, over: Duration) -> Option<f64> {
    let secs = over.as_secs_f64();
    (secs >= 0.1).then(|| bytes as f64 / secs)
}

/// `3/10 images  12.5 KiB  1.2 MiB/s`; `3/? images` until the listing is done.
fn step_numbers(c: &CountSnapshot, rate: Option<f64>) -> String {
    let selected = if c.steps_listed > 0 {
        c.images_selected.to_string()
    } else {
        "?".to_string()
    };
    let mut s = format!(
        "{}/{selected} images  {}",
        c.images_checked,
        HumanBytes(c.bytes_copied)
    );
    if let Some(r) = rate {
        let _ = write!(s, "  {}/s", HumanBytes(r as u64));
    }
    if c.images_failed > 0 {
        let _ = write!(s, "  {} failed", c.images_failed);
    }
    s
}

/// `4/10+ images  1/2 steps  45.6 KiB  1.2 MiB/s  0:07` (`+` while a listing is running).
fn total_numbers(c: &CountSnapshot, steps: usize, rate: Option<f64>, elapsed: Duration) -> String {
    let more = if c.steps_listed < steps as u64 {
        "+"
    } else {
        ""
    };
    let mut s = format!(
        "{}/{}{more} images  {}/{steps} steps  {}",
        c.images_checked,
        c.images_selected,
        c.steps_ended,
        HumanBytes(c.bytes_copied)
    );
    if let Some(r) = rate {
        let _ = write!(s, "  {}/s", HumanBytes(r as u64));
    }
    if c.images_failed > 0 {
        let _ = write!(s, "  {} failed", c.images_failed);
    }
    let secs = elapsed.as_secs();
    let _ = write!(s, "  {}:{:02}", secs / 60, secs % 60);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::TermLike;

    /// A terminal 120 columns wide that keeps what was written to it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl Screen {
        fn text(&self) -> String {
            self.0.lock().unwrap().clone()
        }
        fn push(&self, s: &str) {
            self.0.lock().unwrap().push_str(s);
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            self.push("<up>");
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(s);
            self.push("\n");
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("<clear>");
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn on_screen() -> (Progress, Screen) {
        let screen = Screen::default();
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(screen.clone()),
            DRAW_HZ,
        ));
        (Progress::on(multi), screen)
    }

    fn steps(total: &Arc<Counters>, n: usize) -> (Vec<StepSource>, Vec<Arc<Counters>>) {
        let counters: Vec<Arc<Counters>> = (0..n)
            .map(|_| Arc::new(Counters::under(total.clone())))
            .collect();
        let sources = counters
            .iter()
            .enumerate()
            .map(|(i, c)| StepSource::new(i, &format!("src/{i}"), &format!("dst/{i}"), c.clone()))
            .collect();
        (sources, counters)
    }

    #[test]
    fn numbers_say_done_of_selected_once_the_listing_is_done() {
        let mut c = CountSnapshot {
            images_checked: 3,
            images_selected: 7,
            bytes_copied: 2048,
            ..Default::default()
        };
        assert_eq!(step_numbers(&c, None), "3/? images  2.00 KiB");
        c.steps_listed = 1;
        c.images_failed = 1;
        assert_eq!(
            step_numbers(&c, Some(1024.0)),
            "3/7 images  2.00 KiB  1.00 KiB/s  1 failed"
        );
        c.images_failed = 0;
        assert_eq!(
            total_numbers(&c, 2, None, Duration::from_secs(75)),
            "3/7+ images  0/2 steps  2.00 KiB  1:15"
        );
        c.steps_listed = 2;
        c.steps_ended = 2;
        assert_eq!(
            total_numbers(&c, 2, None, Duration::from_secs(5)),
            "3/7 images  2/2 steps  2.00 KiB  0:05"
        );
    }

    #[test]
    fn throughput_is_measured_over_the_recent_window() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        assert_eq!(r.sample(t0, 0), None);
        assert_eq!(r.sample(t0 + Duration::from_secs(1), 1000), Some(1000.0));
        // Long after, only the recent samples count.
        r.sample(t0 + Duration::from_secs(10), 1000);
        let late = r.sample(t0 + Duration::from_secs(12), 5000).unwrap();
        assert_eq!(late, 2000.0);
    }

    #[test]
    fn a_step_line_shows_its_name_and_final_numbers_then_all_is_taken_down_before_the_next_log_line(
    ) {
        let (progress, screen) = on_screen();
        let display = progress.display.clone();
        let total = Arc::new(Counters::default());
        let (sources, counters) = steps(&total, 2);
        display.expect(&sources);
        display.lock().watch(&display.multi, total, sources);
        let c = &counters[0];
        c.bump(Counter::StepsStarted);
        for _ in 0..3 {
            c.bump(Counter::ImagesSelected);
        }
        c.bump(Counter::StepsListed);
        for _ in 0..3 {
            c.bump(Counter::ImagesChecked);
        }
        c.add(Counter::BytesCopied, 4096);
        c.bump(Counter::StepsEnded);
        progress.display.update();
        let text = screen.text();
        assert!(
            text.contains("sync[0] src/0 -> dst/0") && text.contains("3/3 images  4.00 KiB"),
            "{text}"
        );
        // Step 1 has not started: no line of its own yet.
        assert!(!text.contains("sync[1]"), "{text}");
        assert!(!progress.display.lock().down);

        // A log line while a step runs goes through the display, which stays up.
        let overlay = progress.overlay();
        let mut wrote = 0;
        overlay.suspend(&mut || wrote += 1);
        assert_eq!(wrote, 1);
        assert!(!progress.display.lock().down);

        // Once every step has ended, the next log line takes the display down first.
        counters[1].bump(Counter::StepsStarted);
        counters[1].bump(Counter::StepsListed);
        counters[1].bump(Counter::StepsEnded);
        let before = screen.text().len();
        overlay.suspend(&mut || screen.push("LOG LINE\n"));
        let after = screen.text()[before..].to_string();
        let log_at = after.find("LOG LINE").unwrap();
        assert!(
            after[..log_at].contains("sync[1] src/1 -> dst/1"),
            "step 1's final numbers are drawn before the display goes: {after}"
        );
        assert!(after[..log_at].contains("<clear>"), "{after}");
        assert!(
            !after[log_at..].contains("->"),
            "drawn after the log line: {after}"
        );
        assert!(progress.display.lock().down);
    }

    #[test]
    fn finish_ends_the_poll_thread_and_takes_the_display_down() {
        let (mut progress, screen) = on_screen();
        let total = Arc::new(Counters::default());
        let (sources, counters) = steps(&total, 1);
        progress.watch(total, sources);
        counters[0].bump(Counter::StepsStarted);
        let started = Instant::now();
        progress.finish();
        assert!(started.elapsed() < FINISH_WAIT, "finish waited for nothing");
        assert!(progress.display.lock().down);
        let text = screen.text();
        assert!(text.contains("sync[0] src/0 -> dst/0"), "{text}");
        assert!(text.contains("total  0/0+ images  0/1 steps"), "{text}");
    }

    #[test]
    fn a_run_that_ends_before_the_poll_thread_sets_up_draws_nothing_after_its_last_log_line() {
        // A run of a few milliseconds (a step whose listing fails at once): every step has
        // ended and the summary is logged before the poll thread has drawn anything.
        let (mut progress, screen) = on_screen();
        let display = progress.display.clone();
        let total = Arc::new(Counters::default());
        let (sources, counters) = steps(&total, 1);
        let thread_busy = display.lock();
        progress.watch(total, sources);
        counters[0].bump(Counter::StepsStarted);
        counters[0].bump(Counter::StepsEnded);
        drop(thread_busy);
        // The log writer gets the state before the poll thread does.
        let overlay = progress.overlay();
        overlay.suspend(&mut || screen.push("LOG LINE\n"));
        progress.finish();
        let text = screen.text();
        let log_at = text.find("LOG LINE").unwrap();
        assert!(
            !text[log_at..].contains("->") && !text[log_at..].contains("total"),
            "drawn after the last log line: {text}"
        );
    }

    #[test]
    fn at_most_max_step_lines_are_shown_and_ended_ones_make_room() {
        let (progress, _screen) = on_screen();
        let display = progress.display.clone();
        let total = Arc::new(Counters::default());
        let n = MAX_STEP_LINES + 3;
        let (sources, counters) = steps(&total, n);
        display.lock().watch(&display.multi, total, sources);
        for c in &counters {
            c.bump(Counter::StepsStarted);
        }
        display.update();
        assert_eq!(display.lock().shown(), MAX_STEP_LINES);
        // Two end: their lines stay until the room is needed, then the waiting steps get it.
        counters[0].bump(Counter::StepsEnded);
        counters[1].bump(Counter::StepsEnded);
        display.update();
        display.update();
        let state = display.lock();
        assert_eq!(state.shown(), MAX_STEP_LINES);
        assert!(state.steps[0].bar.is_none() && state.steps[1].bar.is_none());
        assert!(state.steps[MAX_STEP_LINES].bar.is_some());
        assert!(state.steps[MAX_STEP_LINES + 1].bar.is_some());
        assert!(state.steps[MAX_STEP_LINES + 2].bar.is_none());
    }
}
