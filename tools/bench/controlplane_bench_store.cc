// controlplane_bench_store: the list bench's walks (controlplane_bench.cc,
// phase "list") straight against SqliteTemplateStore::ListEncodedTemplates in
// one process, without gRPC, so the store's share of a list page's CPU can be
// measured and profiled (perf record --call-graph dwarf) on its own. Not a
// test. Reads a copy of a seeded bench database (it may migrate it):
//
//   cp /var/tmp/imagetemplates-cpbench/cp.db /tmp/x.db
//   controlplane_bench_store --db=/tmp/x.db [--seconds=5] [--threads=1]
//       [--filter=0..3] [--commits-per-second=N] [--public-memo-after-pages=N]
//
// --commits-per-second: another thread commits unrelated rows (a table of
// its own) at that rate, as heartbeats and audit rows do in a live control
// plane; each commit empties the store's list memo. Prints pages/s,
// microseconds of CPU per page (the committing thread's included) and items
// per page.
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "controlplane/migrations.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_template_store.h"

namespace {

namespace v1 = imagetemplates::v1;

struct Filter {
  const char* tag;
  const char* name_contains;
  controlplane::TemplateOrder order;
};
// The same four as controlplane_bench.cc's kListFilters.
constexpr Filter kFilters[] = {
    {"linux", "", controlplane::TemplateOrder::kCreateTime},
    {"prod", "", controlplane::TemplateOrder::kName},
    {"", "web", controlplane::TemplateOrder::kCreateTime},
    {"gpu", "ubuntu", controlplane::TemplateOrder::kCreateTime},
};

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  std::string db_path;
  int64_t seconds = 5, threads = 1, page_size = 50, only_filter = -1, commits = 0,
          public_memo_after_pages = controlplane::SqliteTemplateStore::kDefaultPublicMemoAfterPages;
  common::FlagSet flags("controlplane_bench_store --db=PATH [--seconds=5] [--threads=1]");
  flags.String("db", &db_path, "copy of a seeded controlplane_bench database");
  flags.Int("seconds", &seconds, "measured seconds");
  flags.Int("threads", &threads, "concurrent walkers (each its own account)");
  flags.Int("page-size", &page_size, "templates per page");
  flags.Int("filter", &only_filter, "walk only this one of the four filters (0-3); -1: all");
  flags.Int("public-memo-after-pages", &public_memo_after_pages,
            "SqliteTemplateStore's threshold; -1: never (public rows read page by page)");
  flags.Int("commits-per-second", &commits,
            "unrelated commits per second by another thread (each empties the list memo)");
  bool help = false;
  if (!flags.Parse(argc, argv, &help).ok() || help || db_path.empty()) {
    std::fprintf(stderr, "controlplane_bench_store: bad usage\n%s", flags.Help().c_str());
    return 2;
  }
  auto db = controlplane::SqliteDatabase::Open(db_path, controlplane::Migrations());
  if (!db.ok()) {
    std::fprintf(stderr, "open: %s\n", db.status().ToString().c_str());
    return 1;
  }
  controlplane::SqliteTemplateStore store(
      db->get(), controlplane::SqliteTemplateStore::kDefaultCacheEntries,
      public_memo_after_pages < 0 ? std::numeric_limits<int>::max()
                                  : static_cast<int>(public_memo_after_pages));
  // Accounts that own templates, spread over the range like the bench's callers.
  std::vector<std::string> accounts;
  absl::Status read = (*db)->Read([&](controlplane::SqliteConnection& conn) -> absl::Status {
    auto s = conn.Prepare("SELECT DISTINCT owner_account_id FROM image_templates ORDER BY 1");
    if (!s.ok()) return s.status();
    while (true) {
      auto row = s->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      accounts.push_back(s->ColumnText(0));
    }
    return absl::OkStatus();
  });
  if (!read.ok() || accounts.empty()) {
    std::fprintf(stderr, "no accounts: %s\n", read.ToString().c_str());
    return 1;
  }
  std::atomic<bool> stop{false}, measuring{false};
  std::atomic<int64_t> pages{0}, items{0}, errors{0};
  auto walker = [&](size_t n) {
    const std::string& viewer = accounts[(n * 997 + 13) % accounts.size()];
    size_t f = only_filter >= 0 ? static_cast<size_t>(only_filter) % 4 : n % 4;
    std::optional<controlplane::TemplateCursor> after;
    while (!stop.load(std::memory_order_relaxed)) {
      controlplane::TemplateQuery q;
      q.viewer_account_id = viewer;
      q.tag = kFilters[f].tag;
      q.name_contains = kFilters[f].name_contains;
      q.order = kFilters[f].order;
      q.limit = static_cast<int>(page_size) + 1;
      q.after = after;
      auto page = store.ListEncodedTemplates(q);
      if (!page.ok()) {
        errors.fetch_add(1);
        after.reset();
        continue;
      }
      const bool more = page->size() > static_cast<size_t>(page_size);
      if (more) page->resize(page_size);
      if (measuring.load(std::memory_order_relaxed)) {
        pages.fetch_add(1, std::memory_order_relaxed);
        items.fetch_add(static_cast<int64_t>(page->size()), std::memory_order_relaxed);
      }
      if (more) {
        const v1::ImageTemplate& last = page->back()->image_template;
        controlplane::TemplateCursor c;
        c.id = last.id();
        c.name = last.name();
        c.create_time_us =
            last.create_time().seconds() * 1000000 + last.create_time().nanos() / 1000;
        after = c;
      } else {
        after.reset();
        if (only_filter < 0) f = (f + 1) % 4;
      }
    }
  };
  std::vector<std::thread> workers;
  if (commits > 0) {
    absl::Status created = (*db)->Transaction([](controlplane::SqliteConnection& conn) {
      auto s = conn.Prepare("CREATE TABLE IF NOT EXISTS bench_ticks (t INTEGER)");
      return s.ok() ? s->Run() : s.status();
    });
    if (!created.ok()) {
      std::fprintf(stderr, "bench_ticks: %s\n", created.ToString().c_str());
      return 1;
    }
    workers.emplace_back([&] {
      const auto period = std::chrono::microseconds(1000000 / commits);
      auto next = std::chrono::steady_clock::now();
      while (!stop.load(std::memory_order_relaxed)) {
        absl::Status s = (*db)->Transaction([](controlplane::SqliteConnection& conn) {
          auto s = conn.Prepare("INSERT INTO bench_ticks (t) VALUES (1)");
          return s.ok() ? s->Run() : s.status();
        });
        if (!s.ok()) errors.fetch_add(1);
        next += period;
        std::this_thread::sleep_until(next);
      }
    });
  }
  for (int64_t i = 0; i < threads; ++i) workers.emplace_back(walker, static_cast<size_t>(i));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // warm the cache
  const double cpu0 = CpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  measuring = true;
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  measuring = false;
  const double cpu1 = CpuSeconds();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  for (auto& w : workers) w.join();
  const double n = static_cast<double>(pages.load());
  std::printf("threads %lld: %.0f pages/s, %.1f us CPU/page, %.1f items/page, %lld errors\n",
              static_cast<long long>(threads), n / wall, n > 0 ? (cpu1 - cpu0) / n * 1e6 : 0.0,
              n > 0 ? items.load() / n : 0.0, static_cast<long long>(errors.load()));
  return errors.load() == 0 ? 0 : 1;
}
