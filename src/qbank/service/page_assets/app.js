// The search page: talks to this gateway's POST /post (jina's HTTP API) like any HTTP client.
// Text from the bank is untrusted: it is only ever put into the page as textContent, never as HTML.
// Math in it ($…$, $$…$$, \(…\), \[…\]) is then typeset by KaTeX (served from /ui/katex), which
// reads those text nodes and replaces them with its own output: trust off (no \href, \url,
// \includegraphics or HTML extensions), errors shown as text, expansion and sizes bounded.
"use strict";

const TOKEN_KEY = "qbank-token";

// The page's words: Chinese by default, English with ?lang=en. Static labels carry data-i18n (and
// data-i18n-placeholder / -alt / -aria-label) keys of TEXT; messages are t(key, ...values).
const LANG = new URLSearchParams(location.search).get("lang") === "en" ? "en" : "zh";
const TEXT = {
  zh: {
    title: "题库搜索", connecting: "连接中…", otherLanguage: "English", tokenButton: "令牌",
    tokenLabel: "本服务需要令牌", tokenUse: "使用令牌",
    tokenHint: "只保存在本标签页（sessionStorage），作为 Authorization 请求头发送。",
    queryPlaceholder: "输入题目，或拖入、粘贴、选择一张图片", dropHint: "图片：拖入、粘贴（Ctrl+V）或选择文件",
    imageAlt: "查询图片", clearImage: "清除图片", modeLabel: "模式", modeDefault: "服务默认",
    modeDense: "向量（CLIP）", modeBm25: "全文（BM25）", modeHybrid: "混合", searchIn: "搜索范围",
    modalityAll: "题干和图形", modalityText: "题干", modalityImage: "图形",
    photo: "题目照片（识别其中文字）", wholePage: "整页（逐题搜索）", subject: "学科", grade: "年级",
    qtype: "题型", limit: "结果数", search: "搜索", pageAlt: "搜索的整页照片，每道识别出的题目都框出",
    pageCaption: "每个框是页面上识别出的一道题；它的匹配结果按题号列在下方", close: "关闭",
    unreachable: (endpoint, why) => `${endpoint}：无法连接服务（${why}）`,
    needsToken: "本服务需要令牌", refused: "被拒绝（401）",
    items: (n) => `${n} 个条目`, model: (m) => `模型 ${m || "尚无"}`, dim: (d) => `维度 ${d || "-"}`,
    index: (i) => `索引 ${i || "-"}`, fullText: (on) => `全文检索${on ? "已开启" : "未开启"}`,
    statsUnavailable: "统计信息不可用", notImage: "这不是图片文件",
    mathDeep: (depth, most) => `公式嵌套 ${depth} 层（本页最多排版 ${most} 层）`,
    mathSpans: (spans, most) => `${spans} 段公式（本页最多排版 ${most} 段）`,
    shownAsWritten: (why) => `按原文显示：${why}`, answer: "答案", analysis: "解析",
    noPath: (id) => `${id}：存储时没有路径或网址`, figureAlt: (id) => `图形 ${id}`,
    matchedFigure: "匹配：图形", matchedStem: "匹配：题干", figureOnly: "（无题干：只有图形的题目）",
    typeOrImage: "请输入题目或提供图片", searching: "搜索中…",
    readFromPhoto: (text) => `照片中识别的文字：${text}`, noTextRead: "没有识别到文字",
    noQuestions: "没有找到题目", bankEmpty: "题库是空的：请先导入题目（qbank import）",
    noFigureItems: "题库中没有图形条目：导入带图形的题目（图形列或 HTML 图片）后才能搜索图形",
    noFilterItems: (filter) => `题库中没有符合 ${filter} 的条目：请检查筛选条件`, questionNumber: (n) => `第 ${n} 题`, aboveFirstNumber: "第一个题号之前的文字",
    noNumbers: "页面上没有找到题号：取消“整页”后再搜索", loading: "加载中…", similar: "相似题目",
    noStemToCompare: "没有可比较的题干", none: "无", noStem: "（无题干）",
    scoreName: { cosine: "余弦相似度", bm25: "BM25", rrf: "RRF 排名融合", weighted: "加权融合", "in-order": "顺序匹配", coverage: "覆盖率", "": "得分" },
  },
  en: {
    title: "Question bank search", connecting: "connecting…", otherLanguage: "中文", tokenButton: "Token",
    tokenLabel: "This service requires a token", tokenUse: "Use token",
    tokenHint: "Kept for this tab only (sessionStorage); sent as the Authorization header.",
    queryPlaceholder: "Type a question, or drop / paste / pick an image",
    dropHint: "Image: drop, paste (Ctrl+V) or pick a file", imageAlt: "query image", clearImage: "Clear image",
    modeLabel: "Mode", modeDefault: "server default", modeDense: "dense (CLIP)", modeBm25: "bm25 (full text)",
    modeHybrid: "hybrid", searchIn: "Search in", modalityAll: "stems and figures", modalityText: "stems",
    modalityImage: "figures", photo: "photo of a question (read its text)",
    wholePage: "whole page (each question on it)", subject: "Subject", grade: "Grade", qtype: "Type",
    limit: "Results", search: "Search", pageAlt: "the page searched, each question found on it boxed",
    pageCaption: "each box is a question found on the page; its matches are listed below under its number",
    close: "close",
    unreachable: (endpoint, why) => `${endpoint}: the service cannot be reached (${why})`,
    needsToken: "the service requires a token", refused: "refused (401)",
    items: (n) => `${n} items`, model: (m) => `model ${m || "none yet"}`, dim: (d) => `dim ${d || "-"}`,
    index: (i) => `index ${i || "-"}`, fullText: (on) => `full text ${on ? "on" : "off"}`,
    statsUnavailable: "stats unavailable", notImage: "that is not an image file",
    mathDeep: (depth, most) => `math nested ${depth} deep (the page typesets at most ${most})`,
    mathSpans: (spans, most) => `${spans} math spans (the page typesets at most ${most})`,
    shownAsWritten: (why) => `shown as written: ${why}`, answer: "Answer", analysis: "Analysis",
    noPath: (id) => `${id}: stored without a path or URL`, figureAlt: (id) => `figure ${id}`,
    matchedFigure: "matched: figure", matchedStem: "matched: stem", figureOnly: "(no stem: a figure-only question)",
    typeOrImage: "type a question or give an image", searching: "searching…",
    readFromPhoto: (text) => `read from the photo: ${text}`, noTextRead: "no text read",
    noQuestions: "no questions found", bankEmpty: "the bank is empty: import questions first (qbank import)",
    noFigureItems: "the bank has no figure items: import questions with figures (a figure column or HTML images) to search them",
    noFilterItems: (filter) => `no item of the bank has ${filter}: check the filters`, questionNumber: (n) => `question ${n}`,
    aboveFirstNumber: "lines above the first number",
    noNumbers: "no question numbers found on the page: search it without 'whole page'", loading: "loading…",
    similar: "Similar questions", noStemToCompare: "no stem to compare", none: "none", noStem: "(no stem)",
    scoreName: { cosine: "cosine", bm25: "bm25", rrf: "rrf", weighted: "weighted", "in-order": "in-order", coverage: "coverage", "": "score" },
  },
};
// What each score is (the kind the server set beside scores.score), shown as the score's tooltip.
const SCORE_MEANING = {
  zh: {
    rrf: "倒数排名融合：向量与全文两个列表中 1/(k+名次) 之和，是名次而不是相似度",
    weighted: "向量与全文分数归一化后的加权和", "in-order": "识别文字按顺序出现在题干中的比例",
    coverage: "输入的词按顺序出现在题干中的比例", bm25: "BM25 全文分数（越高越好，无上限）", cosine: "CLIP 向量的余弦相似度",
  },
  en: {
    rrf: "reciprocal rank fusion, 1/(k+rank) summed over the dense and bm25 lists: a rank, not a similarity",
    weighted: "the weighted sum of the normalised dense and bm25 scores",
    "in-order": "the share of the text read that the stem holds in the same order",
    coverage: "the share of the typed words the stem holds in order",
    bm25: "the BM25 score of the words (higher is better, unbounded)", cosine: "the cosine similarity of the CLIP vectors",
  },
};

function t(key, ...values) {
  const entry = TEXT[LANG][key];
  return typeof entry === "function" ? entry(...values) : entry;
}

function translatePage() {
  document.documentElement.lang = LANG === "en" ? "en" : "zh-CN";
  document.title = t("title");
  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  for (const element of document.querySelectorAll("[data-i18n-placeholder]")) element.placeholder = t(element.dataset.i18nPlaceholder);
  for (const element of document.querySelectorAll("[data-i18n-alt]")) element.alt = t(element.dataset.i18nAlt);
  for (const element of document.querySelectorAll("[data-i18n-aria-label]")) element.setAttribute("aria-label", t(element.dataset.i18nAriaLabel));
  $("language").href = LANG === "en" ? "?lang=zh" : "?lang=en";
}
const $ = (id) => document.getElementById(id);
const state = { image: null, token: sessionStorage.getItem(TOKEN_KEY) || "", questions: new Map(), figures: new Map() };

class ServiceError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function headers(extra) {
  const out = Object.assign({}, extra || {});
  if (state.token) out.Authorization = state.token;
  return out;
}

// One request to an endpoint; returns {docs, results}. Errors carry the message the service gave.
async function call(endpoint, data, parameters) {
  let response;
  try {
    response = await fetch("/post", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ execEndpoint: endpoint, data: data || [], parameters: parameters || {} }),
    });
  } catch (err) {
    throw new ServiceError(t("unreachable", endpoint, err.message), 0);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) {
    askForToken(body && body.detail ? body.detail : t("needsToken"));
    throw new ServiceError(`${endpoint}: ${body && body.detail ? body.detail : t("refused")}`, 401);
  }
  const status = body && body.header && body.header.status;
  if (!response.ok || (status && status.code && status.code !== 0 && status.code !== "SUCCESS")) {
    throw new ServiceError(`${endpoint}: ${describeError(body, response)}`, response.status);
  }
  const results = {};
  const merged = (body.parameters && body.parameters.__results__) || {};
  for (const value of Object.values(merged)) Object.assign(results, value);
  return { docs: body.data || [], results };
}

// jina describes an executor's exception as its repr, e.g. ParameterError("parameter 'limit' ..."):
// the page shows the message inside.
function unwrap(description) {
  const inner = /^[A-Za-z_][\w.]*\((["'])([\s\S]*)\1,?\)$/.exec(description.trim());
  return inner ? inner[2].replace(/\\(["'\\])/g, "$1") : description;
}

function describeError(body, response) {
  if (body) {
    const status = body.header && body.header.status;
    if (status && status.description) return unwrap(status.description);
    if (status && status.exception && status.exception.args && status.exception.args.length) return status.exception.args.join(" ");
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  }
  return `HTTP ${response.status}`;
}

function showMessage(text, info) {
  const box = $("message");
  box.textContent = text;
  box.className = info ? "info" : "";
  box.hidden = !text;
}

function askForToken(reason) {
  $("token-panel").hidden = false;
  if (reason) showMessage(reason);
  $("token-input").focus();
}

// -- stats header ----------------------------------------------------------------------------
async function loadStats() {
  try {
    const { results: s } = await call("/stats");
    const parts = [
      t("items", Number(s.count || 0).toLocaleString()),
      t("model", s.model),
      t("dim", s.dim),
      t("index", s.index_type),
      t("fullText", s.full_text),
    ];
    if (s.milvus_version) parts.push(`Milvus ${s.milvus_version}`);
    $("stats").textContent = parts.join(" · ");
    $("stats").dataset.loaded = "true";
  } catch (err) {
    $("stats").textContent = t("statsUnavailable");
    showMessage(err.message);
  }
}

// -- query image: file picker, drag and drop, paste -----------------------------------------------
function setImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    showMessage(t("notImage"));
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.image = reader.result; // a data: URI, which the encoder reads as clip-server does
    $("image-preview").src = state.image;
    $("image-preview").hidden = false;
    $("clear-image").hidden = false;
    $("drop-hint").hidden = true;
  };
  reader.readAsDataURL(file);
}

function clearImage() {
  state.image = null;
  $("query-image").value = "";
  $("image-preview").hidden = true;
  $("image-preview").removeAttribute("src");
  $("clear-image").hidden = true;
  $("drop-hint").hidden = false;
}

// -- highlighting: the query's words found in a stem, for bm25 and hybrid results -----------------
function matchedRanges(stem, query) {
  const text = stem.toLowerCase();
  const marks = new Array(stem.length).fill(false);
  const markAll = (word) => {
    if (!word) return;
    let at = text.indexOf(word);
    while (at !== -1) {
      for (let i = at; i < at + word.length; i += 1) marks[i] = true;
      at = text.indexOf(word, at + 1);
    }
  };
  const q = query.toLowerCase().slice(0, 300);
  // Runs of Han characters: every stretch of two or more found in the stem (Chinese has no spaces).
  for (const run of q.match(/[\u3400-\u9fff\uf900-\ufaff]+/g) || []) {
    for (let i = 0; i < run.length; i += 1) {
      for (let j = run.length; j >= i + 2; j -= 1) {
        if (text.includes(run.slice(i, j))) { markAll(run.slice(i, j)); break; }
      }
    }
  }
  // Latin words and numbers: whole tokens.
  for (const word of q.match(/[a-z0-9]+/g) || []) {
    const pattern = new RegExp(`(^|[^a-z0-9])(${word})(?![a-z0-9])`, "g");
    let found;
    while ((found = pattern.exec(text)) !== null) {
      const start = found.index + found[1].length;
      for (let i = start; i < start + word.length; i += 1) marks[i] = true;
      pattern.lastIndex = start + 1;
    }
  }
  return marks;
}

const MATH_DELIMITERS = [
  { left: "$$", right: "$$", display: true },
  { left: "\\[", right: "\\]", display: true },
  { left: "\\(", right: "\\)", display: false },
  { left: "$", right: "$", display: false },
];
// throwOnError: a formula KaTeX cannot parse is left as its text by auto-render (KaTeX's own error
// markup sets its colour as a style attribute, which this page's CSP refuses).
const KATEX_OPTIONS = {
  delimiters: MATH_DELIMITERS, throwOnError: true, errorCallback: () => {}, trust: false, strict: "ignore",
  maxExpand: 200, maxSize: 20,
};
// Bounds checked before KaTeX runs, since a stored formula is anyone's: nested 160 deep, KaTeX's output
// crashed Chromium's tab; 1,900 deep it threw a RangeError that throwOnError does not catch and no
// result card was shown at all; 5,000 spans in one stem blocked the page for 2-4 s. Over a bound, the
// text is shown as written.
const MAX_MATH_DEPTH = 24; // groups ({…}, \left…\right) inside each other; exams use a handful
const MAX_MATH_SPANS = 200; // math spans in one stem, option, answer or analysis
const TYPESET_SLICE_MS = 12; // typesetting runs in slices this long, so the page answers meanwhile

function hasMath(text) {
  return /\$|\\\(|\\\[/.test(text);
}

// Why the math of ``text`` is not typeset (too deep, too many spans), or "" when it may be: one pass.
function mathProblem(text) {
  let depth = 0;
  let deepest = 0;
  let dollars = 0;
  let openers = 0;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (c === "{") {
      depth += 1;
      deepest = Math.max(deepest, depth);
    } else if (c === "}") {
      depth = Math.max(0, depth - 1);
    } else if (c === "$") {
      dollars += 1;
    } else if (c === "\\") {
      if (text.startsWith("left", i + 1)) {
        depth += 1;
        deepest = Math.max(deepest, depth);
        i += 4;
      } else if (text.startsWith("right", i + 1)) {
        depth = Math.max(0, depth - 1);
        i += 5;
      } else {
        if (text[i + 1] === "(" || text[i + 1] === "[") openers += 1;
        i += 1; // an escaped character (\{, \$) is no group and no delimiter
      }
    }
  }
  if (deepest > MAX_MATH_DEPTH) return t("mathDeep", deepest, MAX_MATH_DEPTH);
  const spans = Math.floor(dollars / 2) + openers;
  if (spans > MAX_MATH_SPANS) return t("mathSpans", spans, MAX_MATH_SPANS);
  return "";
}

function asWritten(element, text, why) {
  element.textContent = text;
  element.classList.add("math-source");
  element.title = t("shownAsWritten", why);
}

// Elements waiting to be typeset, in the order they were shown; worked through in slices.
const typesetQueue = [];
let typesetScheduled = false;

function typesetSome() {
  const started = performance.now();
  while (typesetQueue.length && performance.now() - started < TYPESET_SLICE_MS) {
    const element = typesetQueue.shift();
    if (!element.isConnected) continue; // a newer search replaced it
    const text = element.textContent;
    try {
      window.renderMathInElement(element, KATEX_OPTIONS);
    } catch (err) { // anything KaTeX throws stays in this element: every other card is shown
      asWritten(element, text, err && err.message ? err.message : String(err));
    }
  }
  typesetScheduled = typesetQueue.length > 0;
  if (typesetScheduled) setTimeout(typesetSome, 0);
}

// Typeset the math in an element's text nodes (KaTeX's auto-render), soon and in slices; text without
// math is left alone, and math over the bounds is shown as written.
function typeset(element) {
  const text = element.textContent;
  if (typeof window.renderMathInElement !== "function" || !hasMath(text)) return element;
  const problem = mathProblem(text);
  if (problem) {
    asWritten(element, text, problem);
    return element;
  }
  typesetQueue.push(element);
  if (!typesetScheduled) {
    typesetScheduled = true;
    setTimeout(typesetSome, 0);
  }
  return element;
}

// A stem item's text is the stem followed by its options ("A. …" lines, as a page prints them); with
// the options in its tags, the page shows the stem alone and the options as a list.
function splitOptions(text, tags) {
  const options = tags && Array.isArray(tags.options)
    ? tags.options.filter((o) => o && typeof o === "object").map((o) => [String(o.label), String(o.text)])
    : [];
  const suffix = options.map(([label, option]) => `\n${label}. ${option}`).join("");
  if (options.length && text.endsWith(suffix)) return { stem: text.slice(0, text.length - suffix.length), options };
  return { stem: text, options: [] };
}

function optionsElement(options) {
  const list = document.createElement("ol");
  list.className = "options";
  for (const [label, option] of options) {
    const item = document.createElement("li");
    item.dataset.label = label;
    item.textContent = `${label}. ${option}`;
    list.appendChild(typeset(item));
  }
  return list;
}

function foldedElement(title, text) {
  const details = document.createElement("details");
  details.className = title.toLowerCase();
  const summary = document.createElement("summary");
  summary.textContent = title;
  const body = document.createElement("p");
  body.textContent = text;
  details.append(summary, typeset(body));
  return details;
}

// The stem, its options as a list, and (in the detail view) its answer and analysis, folded.
function questionTextElements(text, tags, query, full) {
  const { stem, options } = splitOptions(text, tags);
  const shown = [stemElement(stem, query)];
  if (options.length) shown.push(optionsElement(options));
  if (full) {
    for (const [key, title] of [["answer", t("answer")], ["analysis", t("analysis")]]) {
      if (tags && tags[key] !== undefined && tags[key] !== "") shown.push(foldedElement(title, String(tags[key])));
    }
  }
  return shown;
}

function stemElement(stem, query) {
  const element = document.createElement("p");
  element.className = "stem";
  if (!query || hasMath(stem)) {  // marks would split math spans: typeset instead of highlighting
    element.textContent = stem;
    return typeset(element);
  }
  const marks = matchedRanges(stem, query);
  let i = 0;
  while (i < stem.length) {
    let j = i;
    while (j < stem.length && marks[j] === marks[i]) j += 1;
    const piece = stem.slice(i, j);
    if (marks[i]) {
      const mark = document.createElement("mark");
      mark.textContent = piece;
      element.appendChild(mark);
    } else {
      element.appendChild(document.createTextNode(piece));
    }
    i = j;
  }
  return element;
}

// -- figures ------------------------------------------------------------------------------------
// Figures fetched with the token are shown from blob: URLs, which hold their bytes until revoked:
// the tab keeps the newest FIGURE_CACHE_SIZE and releases the oldest (an image already drawn stays).
const FIGURE_CACHE_SIZE = 200;

async function figureSource(ref) {
  if (/^https?:\/\//i.test(ref)) return ref; // the bank's own host serves it
  if (!state.figures.has(ref)) {
    state.figures.set(ref, (async () => {
      const response = await fetch(`/ui/figure?ref=${encodeURIComponent(ref)}`, { headers: headers() });
      if (!response.ok) {
        let detail = `HTTP ${response.status}`;
        try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
        throw new ServiceError(detail, response.status);
      }
      return URL.createObjectURL(await response.blob());
    })());
    while (state.figures.size > FIGURE_CACHE_SIZE) {
      const [oldest, source] = state.figures.entries().next().value;
      state.figures.delete(oldest);
      source.then((url) => URL.revokeObjectURL(url), () => { /* nothing was made */ });
    }
  }
  return state.figures.get(ref);
}

function figuresElement(items) {
  const box = document.createElement("div");
  box.className = "figures";
  for (const item of items) {
    const ref = (item.tags && item.tags.figure) || item.uri || "";
    if (!ref) {
      const missing = document.createElement("span");
      missing.className = "figure-missing";
      missing.textContent = t("noPath", item.id);
      box.appendChild(missing);
      continue;
    }
    const img = document.createElement("img");
    img.alt = t("figureAlt", item.id);
    img.dataset.item = item.id;
    img.referrerPolicy = "no-referrer";
    box.appendChild(img);
    figureSource(ref).then((src) => { img.src = src; }).catch((err) => {
      const missing = document.createElement("span");
      missing.className = "figure-missing";
      missing.textContent = `${item.id}: ${err.message}`;
      img.replaceWith(missing);
    });
  }
  return box;
}

// -- questions ----------------------------------------------------------------------------------
async function loadQuestions(ids) {
  const wanted = ids.filter((id) => !state.questions.has(id));
  if (wanted.length) {
    const { docs } = await call("/questions", [], { question_ids: wanted });
    const byQuestion = new Map(wanted.map((id) => [id, []]));
    for (const doc of docs) {
      const qid = (doc.tags && doc.tags.question_id) || doc.id;
      if (byQuestion.has(qid)) byQuestion.get(qid).push(doc);
    }
    for (const [id, items] of byQuestion) state.questions.set(id, items);
  }
  return ids.map((id) => ({ id, items: state.questions.get(id) || [] }));
}

function scoreOf(match) {
  const scores = match.scores || {};
  const value = (scores.score && scores.score.value) ?? (scores.similarity && scores.similarity.value);
  return typeof value === "number" ? value : 0;
}

// What a match's score is, by the score the server set beside scores.score (as qbank_client's
// SCORE_KINDS): the page labels it instead of a bare number (an RRF score is a rank, about 0.016).
const SCORE_KINDS = [["text_similarity", "in-order"], ["text_coverage", "coverage"], ["rrf", "rrf"], ["weighted", "weighted"], ["bm25", "bm25"], ["similarity", "cosine"]];

function scoreKind(match) {
  const scores = match.scores || {};
  const found = SCORE_KINDS.find(([key]) => scores[key] !== undefined);
  return found ? found[1] : "";
}

// Matches as question hits: the server grouped them (group_by question_id; qbank.store.searches), so
// each question comes once, its best item first.
function hitsOf(matches) {
  const hits = new Map();
  for (const match of matches) {
    const qid = (match.tags && match.tags.question_id) || match.id;
    if (!hits.has(qid)) {
      hits.set(qid, { id: qid, score: scoreOf(match), kind: scoreKind(match), side: match.modality || (match.text ? "text" : "image"), best: match });
    }
  }
  return [...hits.values()];
}

// A question's items split as the page shows them: its stem (the text item), its figures, its tags.
function questionParts(items, fallback) {
  const stem = items.find((i) => i.modality === "text");
  const figures = items.filter((i) => i !== stem);
  const tags = ((stem || items[0] || fallback || {}).tags) || {};
  return { stem, figures, tags };
}

function meta(tags) {
  return ["subject", "grade", "type"].map((k) => tags[k]).filter(Boolean).join(" · ");
}

function cardElement(hit, question, rank, highlight) {
  const card = document.createElement("li");
  card.className = "card";
  card.tabIndex = 0;
  card.dataset.question = hit.id;
  const { stem: stemItem, figures: figureItems, tags } = questionParts(question.items, hit.best);
  const top = document.createElement("div");
  top.className = "top";
  const parts = [
    ["rank", `#${rank}`],
    ["qid", hit.id],
    ["badge " + hit.side, hit.side === "image" ? t("matchedFigure") : t("matchedStem")],
    ["score", `${TEXT[LANG].scoreName[hit.kind] || TEXT[LANG].scoreName[""]} ${hit.score.toFixed(4)}`],
    ["meta", meta(tags)],
  ];
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    if (cls === "score" && SCORE_MEANING[LANG][hit.kind]) span.title = SCORE_MEANING[LANG][hit.kind];
    top.appendChild(span);
  }
  card.appendChild(top);
  if (stemItem) card.append(...questionTextElements(stemItem.text || "", tags, highlight, false));
  else card.appendChild(stemElement(t("figureOnly"), ""));
  if (figureItems.length) card.appendChild(figuresElement(figureItems));
  card.addEventListener("click", () => showDetail(hit.id));
  card.addEventListener("keydown", (event) => { if (event.key === "Enter") showDetail(hit.id); });
  return card;
}

function currentFilter() {
  const filter = {};
  for (const [field, input] of [["subject", "subject"], ["grade", "grade"], ["type", "qtype"]]) {
    const value = $(input).value.trim();
    if (value) filter[field] = value;
  }
  return filter;
}

// Why a search found nothing, where the bank says so (as the CLI's why_empty): an empty bank, no
// figure items for a search in figures, no item under the filters; else "no questions found".
async function whyEmpty(parameters) {
  try {
    const count = async (filter) => (await call("/count", [], filter ? { filter } : {})).results.count;
    if (!(await count())) return t("bankEmpty");
    if (parameters.modality === "image" && !(await count({ modality: "image" }))) return t("noFigureItems");
    const filter = parameters.filter || {};
    if (Object.keys(filter).length && !(await count(filter))) return t("noFilterItems", JSON.stringify(filter));
  } catch (_) { /* the search itself answered: its plain message will do */ }
  return t("noQuestions");
}

async function search(event) {
  if (event) event.preventDefault();
  const text = $("query-text").value.trim();
  if (!text && !state.image) {
    showMessage(t("typeOrImage"));
    return;
  }
  const limit = Number($("limit").value || 10);
  const parameters = { limit, group_by: "question_id", filter: currentFilter() };
  const mode = $("mode").value;
  const modality = $("modality").value;
  if (mode) parameters.mode = mode;
  if (modality) parameters.modality = modality;
  let doc;
  if (state.image) {
    doc = { uri: state.image };
    if ($("photo").checked || $("whole-page").checked) parameters.ocr = true;
    if ($("whole-page").checked) parameters.page = true;
  } else {
    doc = { text };
  }
  showMessage(t("searching"), true);
  $("read-text").hidden = true;
  $("page-view").hidden = true;
  $("search-button").disabled = true;
  try {
    const { docs } = await call("/search", [doc], parameters);
    const query = docs[0] || {};
    const read = query.tags && query.tags.ocr_text;
    if (parameters.ocr) {
      $("read-text").textContent = read ? t("readFromPhoto", read) : (query.tags && query.tags.ocr_note) || t("noTextRead");
      $("read-text").hidden = false;
    }
    if (parameters.page) {
      await showPage(query);
      return;
    }
    const hits = hitsOf(query.matches || []);
    const questions = await loadQuestions(hits.map((h) => h.id));
    // Words are highlighted where they ranked: bm25, hybrid, and a photo's text (bm25 unless dense).
    const usesWords = mode === "bm25" || mode === "hybrid" || (parameters.ocr && mode !== "dense");
    const highlight = usesWords ? read || text : "";
    const list = $("results");
    list.replaceChildren(...hits.map((hit, i) => cardElement(hit, questions[i], i + 1, highlight)));
    showMessage(hits.length ? "" : await whyEmpty(parameters), true);
  } catch (err) {
    showMessage(err.message);
  } finally {
    $("search-button").disabled = false;
  }
}

// A whole page (page: true): the photo with a box over each question the reader found on it, and
// under each question's number its own matches. The boxes are in the photo's pixels; they are placed
// in percent of its natural size, so they stay on their questions at any width the page shows it.
async function showPage(query) {
  const segments = (query.chunks || []).filter((chunk) => chunk.tags && Array.isArray(chunk.tags.segment_box));
  const image = $("page-image");
  image.src = state.image;
  await image.decode().catch(() => {});
  const holder = $("page-photo");
  holder.replaceChildren(image);
  const sections = [];
  for (const [i, segment] of segments.entries()) {
    const label = segment.tags.segment_number ? t("questionNumber", segment.tags.segment_number) : t("aboveFirstNumber");
    const [left, top, right, bottom] = segment.tags.segment_box.map(Number);
    const box = document.createElement("a");
    box.className = "segment-box";
    box.href = `#segment-${i + 1}`;
    box.textContent = segment.tags.segment_number || "?";
    box.title = label;
    if (image.naturalWidth && image.naturalHeight) {
      box.style.left = `${(100 * left) / image.naturalWidth}%`;
      box.style.top = `${(100 * top) / image.naturalHeight}%`;
      box.style.width = `${(100 * (right - left)) / image.naturalWidth}%`;
      box.style.height = `${(100 * (bottom - top)) / image.naturalHeight}%`;
    }
    holder.appendChild(box);
    const hits = hitsOf(segment.matches || []);
    const questions = await loadQuestions(hits.map((h) => h.id));
    const section = document.createElement("li");
    section.className = "segment";
    section.id = `segment-${i + 1}`;
    section.dataset.number = segment.tags.segment_number || "";
    const heading = document.createElement("h3");
    heading.textContent = `${label}: ${(segment.text || "").slice(0, 60)}`;
    const list = document.createElement("ol");
    list.replaceChildren(...hits.map((hit, rank) => cardElement(hit, questions[rank], rank + 1, segment.text || "")));
    section.append(heading, list);
    sections.push(section);
  }
  $("page-view").hidden = false;
  $("results").replaceChildren(...sections);
  showMessage(segments.length ? "" : t("noNumbers"), true);
}

async function showDetail(qid) {
  const panel = $("detail");
  const body = $("detail-body");
  panel.hidden = false;
  panel.dataset.question = qid;
  body.replaceChildren(document.createTextNode(t("loading")));
  try {
    const [question] = await loadQuestions([qid]);
    const { stem: stemItem, figures: figureItems, tags } = questionParts(question.items);
    const title = document.createElement("h2");
    title.textContent = qid;
    const list = document.createElement("dl");
    for (const [key, value] of Object.entries(tags)) {
      if (["question_id", "modality", "figure", "figure_text", "options", "answer", "analysis"].includes(key)) continue;
      if (value === null || value === "" || (Array.isArray(value) && !value.length)) continue;
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
      list.append(dt, dd);
    }
    const text = stemItem ? questionTextElements(stemItem.text || "", tags, "", true) : [stemElement(t("noStem"), "")];
    const shown = [title, ...text, figuresElement(figureItems), list];
    const heading = document.createElement("h3");
    heading.textContent = t("similar");
    const similar = document.createElement("ol");
    similar.className = "similar";
    similar.id = "similar";
    shown.push(heading, similar);
    body.replaceChildren(...shown);
    if (!stemItem || !stemItem.text) {
      similar.replaceChildren(Object.assign(document.createElement("li"), { className: "empty", textContent: t("noStemToCompare") }));
      return;
    }
    const { docs } = await call("/search", [{ text: stemItem.text }], { limit: 6, modality: "text", group_by: "question_id" });
    const hits = hitsOf((docs[0] && docs[0].matches) || []).filter((h) => h.id !== qid).slice(0, 5);
    const found = await loadQuestions(hits.map((h) => h.id));
    similar.replaceChildren(...hits.map((hit, i) => cardElement(hit, found[i], i + 1, "")));
    if (!hits.length) similar.replaceChildren(Object.assign(document.createElement("li"), { className: "empty", textContent: t("none") }));
  } catch (err) {
    body.replaceChildren(Object.assign(document.createElement("p"), { className: "figure-missing", textContent: err.message }));
  }
}

function start() {
  translatePage();
  $("search-form").addEventListener("submit", search);
  $("token-button").addEventListener("click", () => askForToken(""));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token-input").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    state.figures.clear();
    $("token-panel").hidden = true;
    showMessage("");
    loadStats();
  });
  $("query-image").addEventListener("change", () => setImage($("query-image").files[0]));
  $("clear-image").addEventListener("click", clearImage);
  $("close-detail").addEventListener("click", () => { $("detail").hidden = true; });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) setImage(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) { event.preventDefault(); setImage(file); }
  });
  loadStats();
}

document.addEventListener("DOMContentLoaded", start);
