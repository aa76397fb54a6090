"""The avatar's emotions, and how to read one from a model's answer or a reply's text.

The model is asked to name an emotion from `EMOTIONS`; small models answer "joy", "Happy!"
or "😊" as often as "happy", so `normalize_emotion` maps what they say onto the set.
When the model names none, `emotion_from_text` reads the reply itself with a small
lexicon of English, Chinese and Japanese words, emoji and punctuation. The strength
(0..1) lets the brain send a sticker only when the feeling is clear.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping

from brain.persona.card import DEFAULT_EMOTIONS

# The faces the avatar has: the persona card's default emotion set.
EMOTIONS: tuple[str, ...] = DEFAULT_EMOTIONS

# Strength given to an emotion the model named when the text does not say more.
MODEL_STRENGTH = 0.7
NEUTRAL_STRENGTH = 0.1

# What models say instead of the names in EMOTIONS.
SYNONYMS: Mapping[str, str] = {
    "calm": "neutral", "ok": "neutral", "okay": "neutral", "none": "neutral",
    "normal": "neutral", "plain": "neutral", "default": "neutral", "content": "neutral",
    "joy": "happy", "joyful": "happy", "glad": "happy", "cheerful": "happy",
    "smile": "happy", "smiling": "happy", "pleased": "happy", "delighted": "happy",
    "amused": "happy", "grateful": "happy", "thankful": "happy", "playful": "happy",
    "laugh": "happy", "laughing": "happy", "fun": "happy", "happiness": "happy",
    "excitement": "excited", "thrilled": "excited", "ecstatic": "excited",
    "enthusiastic": "excited", "eager": "excited", "proud": "excited", "hyped": "excited",
    "elated": "excited", "celebrate": "excited", "celebrating": "excited",
    "sadness": "sad", "unhappy": "sad", "sorrow": "sad", "sorry": "sad", "crying": "sad",
    "cry": "sad", "upset": "sad", "lonely": "sad", "depressed": "sad", "hurt": "sad",
    "disappointed": "sad", "gloomy": "sad", "melancholy": "sad", "worried": "sad",
    "anxious": "sad", "sympathetic": "sad", "empathetic": "sad", "concerned": "sad",
    "anger": "angry", "mad": "angry", "annoyed": "angry", "furious": "angry",
    "irritated": "angry", "frustrated": "angry", "grumpy": "angry", "rage": "angry",
    "surprise": "surprised", "shocked": "surprised", "shock": "surprised",
    "astonished": "surprised", "amazed": "surprised", "wow": "surprised",
    "startled": "surprised", "omg": "surprised",
    "embarrassed": "shy", "bashful": "shy", "blushing": "shy", "flustered": "shy",
    "awkward": "shy", "nervous": "shy", "timid": "shy", "shyness": "shy",
    "think": "thinking", "thoughtful": "thinking", "curious": "thinking",
    "hmm": "thinking", "pondering": "thinking", "confused": "thinking",
    "wondering": "thinking", "puzzled": "thinking", "unsure": "thinking",
    "contemplative": "thinking", "curiosity": "thinking", "considering": "thinking",
    "tired": "sleepy", "sleep": "sleepy", "exhausted": "sleepy", "drowsy": "sleepy",
    "bored": "sleepy", "yawn": "sleepy", "relaxed": "sleepy", "weary": "sleepy",
    "loving": "love", "adore": "love", "adoring": "love", "affection": "love",
    "affectionate": "love", "caring": "love", "warm": "love", "tender": "love",
    "romantic": "love", "heart": "love", "hearts": "love", "crush": "love",
    "开心": "happy", "高兴": "happy", "快乐": "happy", "兴奋": "excited", "激动": "excited",
    "难过": "sad", "伤心": "sad", "悲伤": "sad", "生气": "angry", "愤怒": "angry",
    "惊讶": "surprised", "吃惊": "surprised", "害羞": "shy", "思考": "thinking",
    "困": "sleepy", "累": "sleepy", "爱": "love", "喜欢": "love", "平静": "neutral",
    "嬉しい": "happy", "悲しい": "sad", "怒り": "angry", "驚き": "surprised",
    "恥ずかしい": "shy", "眠い": "sleepy", "好き": "love",
}  # fmt: skip

EMOJI: Mapping[str, str] = {
    "🙂": "happy", "😊": "happy", "😀": "happy", "😃": "happy", "😄": "happy", "😁": "happy",
    "😆": "happy", "☺": "happy", "😂": "happy", "🤣": "happy", "😸": "happy", "👍": "happy",
    "🤩": "excited", "🥳": "excited", "🎉": "excited", "✨": "excited", "🙌": "excited",
    "🔥": "excited", "🎊": "excited",
    "😢": "sad", "😭": "sad", "😞": "sad", "😔": "sad", "☹": "sad", "🙁": "sad", "💔": "sad",
    "🥺": "sad", "😿": "sad", "😥": "sad",
    "😠": "angry", "😡": "angry", "🤬": "angry", "💢": "angry", "👿": "angry", "😤": "angry",
    "😮": "surprised", "😲": "surprised", "😯": "surprised", "😱": "surprised",
    "🤯": "surprised", "‼": "surprised", "⁉": "surprised", "🙀": "surprised",
    "😳": "shy", "🙈": "shy", "👉👈": "shy", "😅": "shy",
    "🤔": "thinking", "🧐": "thinking", "💭": "thinking",
    "😴": "sleepy", "💤": "sleepy", "🥱": "sleepy", "😪": "sleepy", "🌙": "sleepy",
    "❤": "love", "♥": "love", "💕": "love", "💖": "love", "💗": "love", "💘": "love",
    "💞": "love", "💓": "love", "😍": "love", "🥰": "love", "😘": "love", "💝": "love",
    "🩷": "love", "🫶": "love",
}  # fmt: skip

# Words (lower case) that suggest an emotion in a reply, with a weight.
_WORDS: Mapping[str, Iterable[str]] = {
    "happy": (
        "happy", "glad", "yay", "great", "nice", "good", "lol", "haha", "hahaha", "hehe",
        "fun", "funny", "smile", "thanks", "thank you", "enjoy", "enjoyed", "pleased",
        "cheerful", "delighted", "lovely", "cool", "joy", "laugh",
    ),
    "excited": (
        "excited", "exciting", "amazing", "awesome", "woohoo", "woo", "hooray", "yippee",
        "can't wait", "cannot wait", "fantastic", "incredible", "let's go", "thrilled",
        "congrats", "congratulations", "celebrate", "wonderful", "epic",
    ),
    "sad": (
        "sad", "sorry", "cry", "crying", "cried", "tears", "unhappy", "lonely", "miss",
        "depressed", "upset", "hurt", "heartbroken", "sigh", "unfortunately", "alas",
        "sadly", "lost", "grief", "awful", "terrible", "poor thing", "that's rough",
    ),
    "angry": (
        "angry", "mad", "furious", "annoyed", "annoying", "hate", "rage", "damn", "ugh",
        "grr", "grrr", "stupid", "irritated", "pissed", "outrageous", "unfair", "how dare",
    ),
    "surprised": (
        "wow", "whoa", "woah", "omg", "oh my", "no way", "surprised", "surprise",
        "surprising", "unexpected", "shocked", "really?", "seriously", "what?!", "gosh",
        "unbelievable",
    ),
    "shy": (
        "shy", "blush", "blushing", "embarrassed", "embarrassing", "awkward", "flattered",
        "oops", "bashful", "you flatter me", "aw shucks",
    ),
    "thinking": (
        "hmm", "hmmm", "hm", "think", "thinking", "wonder", "wondering", "maybe",
        "perhaps", "curious", "let me see", "let me think", "i guess", "not sure",
        "unsure", "consider", "idk", "interesting", "why", "how come",
    ),
    "sleepy": (
        "sleepy", "tired", "sleep", "sleeping", "yawn", "nap", "bedtime", "exhausted",
        "zzz", "goodnight", "good night", "drowsy", "night night", "bed",
    ),
    "love": (
        "love", "adore", "sweetheart", "darling", "xoxo", "kiss", "kisses", "hug",
        "hugs", "cute", "miss you", "beloved", "crush", "sweetie", "dear", "heart",
    ),
}  # fmt: skip

# Chinese and Japanese cues, matched as substrings (longest first, so 不开心 beats 开心).
_CJK: Mapping[str, Iterable[str]] = {
    "happy": (
        "哈哈", "嘻嘻", "嘿嘿", "开心", "高兴", "快乐", "谢谢", "太好了", "好耶", "笑死",
        "嬉しい", "うれしい", "楽しい", "たのしい", "ありがとう", "よかった", "笑",
    ),
    "excited": (
        "太棒了", "好棒", "激动", "兴奋", "期待", "冲鸭", "耶", "厉害", "恭喜",
        "すごい", "最高", "わくわく", "楽しみ", "やった", "おめでとう",
    ),
    "sad": (
        "难过", "伤心", "哭", "呜呜", "不开心", "不高兴", "遗憾", "可惜", "抱歉", "对不起",
        "孤独", "寂寞", "心疼", "唉",
        "悲しい", "かなしい", "寂しい", "さびしい", "ごめん", "泣", "つらい", "残念",
    ),
    "angry": (
        "生气", "气死", "讨厌", "烦死", "愤怒", "可恶", "混蛋", "滚",
        "怒", "ムカつく", "むかつく", "うざい", "ふざけるな", "許さない",
    ),
    "surprised": (
        "哇", "天哪", "天啊", "真的吗", "居然", "竟然", "吓死", "我的天", "没想到",
        "えっ", "マジ", "まじ", "びっくり", "うそ", "本当に",
    ),
    "shy": (
        "害羞", "不好意思", "脸红", "羞",
        "恥ずかしい", "はずかしい", "照れ", "てれ",
    ),
    "thinking": (
        "嗯", "想想", "思考", "困惑", "困った", "困る", "也许", "可能", "好奇", "为什么",
        "怎么回事", "让我想想",
        "うーん", "えーと", "かな", "考え", "なぜ", "どうして",
    ),
    "sleepy": (
        "困", "睡", "好累", "累了", "晚安", "哈欠", "打盹",
        "眠い", "ねむい", "眠", "おやすみ", "疲れ",
    ),
    "love": (
        "爱", "喜欢", "亲亲", "抱抱", "想你", "可爱", "么么哒", "宝贝", "心动",
        "好き", "すき", "愛", "大好き", "かわいい", "可愛い",
    ),
}  # fmt: skip

# Everyday words that hint at an emotion but do not carry it alone: half weight.
_WEAK = frozenset(
    {
        "good", "nice", "cool", "great", "fun", "maybe", "perhaps", "why", "dear", "heart",
        "miss", "lost", "bed", "interesting", "consider", "think", "lovely", "gosh",
        "可能", "也许", "可惜", "かな", "睡", "眠", "笑", "耶", "好き", "すき",
    }
)  # fmt: skip
# Cues that contain a shorter cue but mean something else (困难 is "difficult", not 困).
_NOT_CUES = ("困难",)

_NEGATIONS = frozenset({"not", "no", "never", "don't", "dont", "isn't", "wasn't", "aren't"})
_POSITIVE = frozenset({"happy", "excited", "love"})
_INTENSIFIERS = frozenset(
    {"so", "very", "really", "super", "totally", "absolutely", "extremely", "sooo", "soo"}
)
_CJK_INTENSIFIERS = ("太", "超", "非常", "特别", "真的", "すごく", "とても", "めっちゃ")

_Adder = Callable[[str, float, int], None]


def _fold(text: str) -> str:
    """Lower case, compatibility-normalised (full-width ！ becomes !), emoji variation dropped."""
    return unicodedata.normalize("NFKC", text).replace("\ufe0f", "").lower()


def _alternation(terms: Iterable[str]) -> str:
    return "|".join(re.escape(t) for t in sorted(set(terms), key=len, reverse=True))


_WORD_EMOTION = {w: e for e, words in _WORDS.items() for w in words}
_WORD_RE = re.compile(rf"(?<![\w'])(?:{_alternation(_WORD_EMOTION)})(?![\w'])")
_EMOJI_EMOTION = {_fold(k): v for k, v in EMOJI.items()}
_CUE_EMOTION = {_fold(c): e for e, cues in _CJK.items() for c in cues} | _EMOJI_EMOTION
_CUE_EMOTION.update(dict.fromkeys(_NOT_CUES, ""))
_CUE_RE = re.compile(_alternation(_CUE_EMOTION))
_TOKEN_RE = re.compile(r"[\w']+|[^\w\s]+")


def normalize_emotion(name: str | None) -> str | None:
    """Map a model's emotion word (any case, a synonym, an emoji) onto EMOTIONS, or None.

    "Happy!" and "joy" give "happy"; "very sad" gives "sad"; "❤️" gives "love";
    anything unrecognisable gives None.
    """
    if not name:
        return None
    folded = _fold(name).strip()
    for key in (folded, folded.strip(" .!?,;:'\"()[]{}*_-")):
        if key in EMOTIONS:
            return key
        if key in SYNONYMS:
            return SYNONYMS[key]
        if key in _EMOJI_EMOTION:
            return _EMOJI_EMOTION[key]
    tokens: list[str] = _TOKEN_RE.findall(folded)
    if _NEGATIONS.intersection(tokens):
        return None  # "not happy" names no emotion of the set; let the text decide
    for token in tokens:
        if token in EMOTIONS:
            return token
        if token in SYNONYMS:
            return SYNONYMS[token]
    for match in _CUE_RE.finditer(folded):
        if emotion := _CUE_EMOTION[match.group()]:
            return emotion
    return None


def emotion_from_text(text: str) -> tuple[str, float]:
    """The emotion a reply's words, emoji and punctuation suggest, with a strength 0..1.

    Each cue adds its weight to its emotion; the heaviest wins. "not happy" counts for
    sad, "not sad" for nothing. Exclamation marks, intensifiers ("so", "太") and
    shouting raise the strength. With no cue: ("neutral", 0.1), or 0.0 for empty text.
    """
    folded = _fold(text)
    if not folded.strip():
        return "neutral", 0.0
    scores: dict[str, float] = {}
    first_seen: dict[str, int] = {}

    def add(emotion: str, weight: float, at: int) -> None:
        scores[emotion] = scores.get(emotion, 0.0) + weight
        first_seen.setdefault(emotion, at)

    for match in _WORD_RE.finditer(folded):
        emotion = _WORD_EMOTION[match.group()]
        before = re.findall(r"[\w']+", folded[: match.start()])[-2:]
        if _NEGATIONS.intersection(before):
            if emotion in _POSITIVE:
                add("sad", 0.6, match.start())
            continue
        add(emotion, _weight(match.group()), match.start())
    for match in _CUE_RE.finditer(folded):
        if emotion := _CUE_EMOTION[match.group()]:
            add(emotion, _weight(match.group()), match.start())
    _punctuation(folded, add)
    if not scores:
        return "neutral", NEUTRAL_STRENGTH
    best = max(scores, key=lambda e: (scores[e], -first_seen[e]))
    return best, _strength(text, folded, scores[best])


def _weight(cue: str) -> float:
    return 0.5 if cue in _WEAK else 1.0


def _punctuation(folded: str, add: _Adder) -> None:
    """Cues in punctuation: ?! surprise, a question's doubt, an ellipsis's pause, zzz."""
    if mark := re.search(r"[!?]*(?:\?!|!\?)[!?]*", folded):
        add("surprised", 1.0, mark.start())
    elif mark := re.search(r"\?", folded):
        add("thinking", 0.4, mark.start())
    if mark := re.search(r"\.\.\.|…", folded):
        add("thinking", 0.3, mark.start())
    if mark := re.search(r"z{3,}", folded):
        add("sleepy", 1.0, mark.start())
    if mark := re.search(r"!{2,}", folded):
        add("excited", 0.5, mark.start())
    if mark := re.search(r"(?:ha){3,}|(?:he){3,}|233+|w{3,}", folded):
        add("happy", 0.5, mark.start())


def _strength(text: str, folded: str, score: float) -> float:
    """How strongly the winning emotion shows: its cues plus emphasis, capped at 1."""
    strength = 0.35 + 0.2 * min(score, 3.0)
    strength += 0.08 * min(folded.count("!"), 3)
    words = re.findall(r"[\w']+", folded)
    strength += 0.08 * min(sum(w in _INTENSIFIERS for w in words), 2)
    strength += 0.08 * min(sum(folded.count(c) for c in _CJK_INTENSIFIERS), 2)
    if any(len(w) >= 3 and w.isupper() and w.isalpha() for w in text.split()):
        strength += 0.1  # SHOUTING
    return round(min(strength, 1.0), 2)


def pick_emotion(model_emotion: str | None, reply_text: str) -> tuple[str, float]:
    """The emotion for a reply's sticker: the model's when it named a known one, else the text's.

    The model's emotion takes the lexicon's strength when the text agrees (at least
    MODEL_STRENGTH), MODEL_STRENGTH when it does not; a named "neutral" stays weak.
    """
    named = normalize_emotion(model_emotion)
    read, strength = emotion_from_text(reply_text)
    if named is None:
        return read, strength
    if named == "neutral":
        return "neutral", min(strength, NEUTRAL_STRENGTH)
    if named == read:
        return named, max(strength, MODEL_STRENGTH)
    return named, MODEL_STRENGTH


# Words that suggest an accessory for the sticker: what the conversation is about.
_ACCESSORY_CUES: Mapping[str, Iterable[str]] = {
    "flower": (
        "birthday", "bday", "flower", "flowers", "bloom", "blossom", "garden", "spring",
        "生日", "鲜花", "花朵", "花园", "送花", "樱花", "花束", "开花", "春天",
        "誕生日", "たんじょうび", "お花", "花見", "花束", "桜", "さくら",
    ),
    "turtle": (
        "beach", "sea", "ocean", "turtle", "turtles", "tortoise", "swim", "swimming",
        "surf", "island", "大海", "海边", "海滩", "海洋", "看海", "沙滩", "乌龟", "海龟",
        "游泳", "ビーチ", "海に", "海で", "海へ", "カメ", "かめ", "亀", "泳",
    ),
    "ribbon": (
        "gift", "gifts", "present", "presents", "party", "christmas", "xmas",
        "anniversary", "wedding", "celebration", "ribbon", "礼物", "派对", "聚会", "圣诞",
        "蝴蝶结", "プレゼント", "パーティー", "クリスマス", "リボン", "贈り物",
    ),
}  # fmt: skip
_ACCESSORY_FOR = {_fold(c): a for a, cues in _ACCESSORY_CUES.items() for c in cues}
_ACCESSORY_RE = re.compile(
    "|".join(
        rf"(?<![\w']){re.escape(c)}(?![\w'])" if c.isascii() else re.escape(c)
        for c in sorted(_ACCESSORY_FOR, key=len, reverse=True)
    )
)


def accessory_for_context(text: str) -> str | None:
    """An accessory that fits what `text` talks about (the first cue wins), or None.

    Birthdays and flowers: "flower"; the sea and turtles: "turtle"; gifts and parties:
    "ribbon".
    """
    match = _ACCESSORY_RE.search(_fold(text))
    return _ACCESSORY_FOR[match.group()] if match else None
