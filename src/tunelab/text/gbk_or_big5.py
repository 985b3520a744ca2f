"""Which of GBK (GB18030) and Big5 a line of bytes that is not UTF-8 is Chinese in (`chinese_codec`) — for
text/encodings.py's hint. Simplified Chinese in GBK often decodes as Chinese in Big5 too, and Traditional Chinese in
Big5 as GBK (a Big5 character of lead byte 0xB0-0xC6 and trail byte 0xA1 or more is a GB2312 one as well: `說`,
0xBB 0xA1, reads as GBK's `弧`). A reading of text that was written so is full of the characters Chinese is mostly
written with (`COMMON`), where the other reading is of characters picked at random among thousands; where the line
reads as Chinese in both, the file's other lines that are not UTF-8 are read too (a character-level CoNLL file's
lines are one character each)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable

from tunelab.text import ZH_PUNCT

# ideographs (the unified block and extension A), CJK punctuation, full-width forms
_GBK_CHINESE = re.compile(f"[\u3400-\u4dbf\u4e00-\u9fff{ZH_PUNCT}\u2014-\u201d\u2026\u00b7]")  # and GBK's — ‘’ “” … ·
_BIG5_CHINESE = re.compile(f"[\u3400-\u4dbf\u4e00-\u9fff{ZH_PUNCT}\u2010-\u203b]")  # and Big5's — … ‧ ※
CODECS = (("GB18030", "gb18030", _GBK_CHINESE), ("BIG5", "big5", _BIG5_CHINESE))
More = Callable[[], Iterable[bytes]] | None  # the file's lines from the bad one on (None: not to be read again)
_MORE = 200  # the lines that are not UTF-8 read for the decision (the bad one among them)
_SCANNED = 200_000  # the lines looked at for them
WINDOW = 1 << 16  # the bytes of a longer line looked at, around its bad byte (`window`): a one-line JSON file's
_HIGH = bytes(range(0x80, 0x100))
_GOES_ON = bytes(range(0x30, 0x3A)) + _HIGH  # bytes a character may go on after: non-ASCII, digits (GB18030's 4-byte)
# The characters Chinese is mostly written with: the 1,000 most frequent in about 2.8 million characters of Simplified
# Chinese (hotel reviews, encyclopedic passages and questions, instructions, paper titles, résumés, Weibo posts,
# example sentences: tunelab's Chinese test sets) and the 1,000 most frequent in the same text written in Taiwan's
# Traditional forms (OpenCC's s2tw), 1,391 in all: nine in ten characters of a Chinese text in either writing, one in
# seven of GB2312's characters, one in five of Big5's frequent ones (what the wrong reading's characters are drawn from)
COMMON = frozenset(
    "的一是有我不在和了个個以人为為中可用大这這他生们們間间能年到很于來於来上要时時房店好地对對会會成下酒务務学學"
    "子出国國分理还還方定过過行你公多动動服工数數发天并點作家也点發任后就自經並物经後最机機性法住其沒没提面麼么都"
    "電比电如種小种事使與与高得它說化说月本通程开開入应應现現建里度更計去计體体力新將将給及给前進常进業业主關关感"
    "設所设長加长而總总水客重果之司日解意但什次員合员裡問问然外或車车部实實文据據您特道錯错因位算系她表心同題名题"
    "該想该從从式餐品看著保价價太戶户三制氣气量些語美语海兩两確當确当此被色較西较結創结全创類台相產类供产標起區标"
    "話区網活话信网包正研市句等明第着覺究情影觉非星助早臺件那單變单平变知內格内少別何别技處字無处目交无環安环術至"
    "基术打型需只球利期元代由場器決场者境决樣空統響统列样做响改選湯便选汤路限詞回門管例词組门接持寫组姆晚写每世差"
    "東金形东受科述級级再二資资快費费山讓让視视教找食具斯手風直风效預書预准收书南立習熱习論热評真评候论線近準线流"
    "幫光帮商界音調调源置模集放吗嗎原帶带施政游見息爾见吃尔離离質口质達師达师館示馆析造己歡欢花議滿议喜满導四导聯"
    "值联測已测完先几約展強约幾楼樓强態份态反友米馬向且马運运項景项周節義节識义記像识亞记廣广括亚步取描適床整适北"
    "副言優城优頭圖头首图英士干裝觀智華装五民观求站华戰望健克身战驗象試老验历味邊備试功容复條告边备樂十查条構社溫"
    "乐夠賓构認序推温宾清够走愛认傳素始歷传專股稱专根共爱速減称女許康减院才许遊州轉料遠濟转參团擇團远充济致釋参德"
    "择號把注聲引释麗号必增声存角布深足今香拉丽支修获醫各陽製排室獲投医神攜阳低難換林携治層换含难白故层策越請指園"
    "董请隊營园簡廳划考索队营輸片简厅職續消命输極旅职续育劃钟訂連哪极編護菜订免连段编鐘护飯卡朋超獨饭賽積未狀独率"
    "赛积維般易状江省维居失又乾待辦办羅罗案權权火希兒儿龍龙则則随隨疗療张張险險病謝谢王卫錢衛钱配男监監控送洗黃黄"
    "證证跟思興兴委哈密互另买買絡络巴細细旧聽听舊輕轻圍领围領微印况況博际際演树樹短探静靜除令夜購购銷销半軟软油港"
    "曾貴贵军軍显顯規规睡石升吧舒孩波黑報报留複善码植碼即举亲舉净親淨红校紅符尼堂奇河冷企章剧劇洲略假史歌吸京萬检"
    "湖万檢退戏屬须属戲域精財财临臨府佈势勢落汽富照断須終终切斷诉班訴律叫征福协協怎织土織降死蛋玩杂艺雜毛藝午虑争"
    "慮係隔爭读往草讀徵松概银兰浴銀尽蘭局座酸紀纪街画畫享飛压陈壓飞窗陳缺担铁双擔拿鐵古雙停母硬木百估底附采按养虽"
    "雖叶養念葉沙責补移補责永答負负材族否云洋航票薦採荐脑腦六雲执執牌益週雨均拥播擁笑党亮潜似黨久潛讨绝药討絕鱼染"
    "魚媒破纳藥誤豪误板納录錄青访曲訪普岛島群蓝藍块講塊讲牙阿慢初馈宽饋寬靠休止农谷農乎刚灣剛激湾异異害飲饮泳防杯"
    "繫眼涉瑪衣偏励勵某玛混暖庭距宁寧储儲輯辑威志父坐潔麵洁眾众蘋粉苹禮礼趣秘練套练課季课散努鮮啊貓鲜牛猫李尋寻瞭"
    "宝冰寶穿氧池付突键训鍵库訓庫狗岁歲射挺绿鬆苏綠闻县復邮皮聞夏继森縣肉郵欧繼野籍背款培歐坏塞丰厂壞谈茶吉談廠诗"
    "佳豐售哥浪蘇泰詩遇拟融汉击询频擬桥诚紧川漢介擊惊誠困詢跑頻伤儘奶橋笔緊允糖傷兼翰驚誰谁盐倒唱氏筆伦却挑武宜鹽"
    "顶卻束灯液倫血严承污頂授奥燈范毕帐村隻嚴醒顿汙租竟奧货畢矿帳鸟灵奖頓坚夫冒貨镇派範烟礦唯鳥堅烤官靈獎鼓毒匙鎮"
    "冲盖虚颜筑端钢顾塔蓋胜虛顏鸡衡藏鋼雷顧愿勝良刻雞仍察築盟典九願篇姐归漫纸脚危甚歸迎")


def readings(line: bytes) -> dict[str, tuple[str, int]]:
    """For GB18030 and BIG5: (the line decoded where it reads as Chinese in that encoding, else "" (`_chinese`);
    its characters among that encoding's common ones (`_common`))."""
    read = {}
    for name, codec, chinese_class in CODECS:
        text = _chinese(line, codec, chinese_class)
        read[name] = (text, _common(text, codec))
    return read


def chinese_codec(read: dict[str, tuple[str, int]], more: More = None) -> str | None:
    """"GB18030" or "BIG5", where the line (`readings`) reads as Chinese in it with one of its common characters or
    more, else None: Chinese none of whose characters is a common one is no reading (Windows-1252's `Zoë’s`, 0xEB
    0x92, a rare GBK ideograph). Where it reads so in both, the one whose reading holds more of the characters Chinese
    is mostly written with (`COMMON`), then more of its common characters, GBK on a tie — of the line, or (`more`:
    the file's lines from the bad one on) of the file's lines that are not UTF-8, up to _MORE of them."""
    both = [name for name, (_, common) in read.items() if common]
    if len(both) < 2:
        return both[0] if both else None
    tally = {name: [_usual(text), common] for name, (text, common) in read.items()}
    if more is not None:
        with contextlib.suppress(OSError):  # (the file gone since: the line alone)
            tally = _tally(more(), tally)
    return "BIG5" if tally["BIG5"] > tally["GB18030"] else "GB18030"


def window(line: bytes, at: int = 0) -> bytes:
    """At most WINDOW bytes of `line` around its byte `at` (the whole line where it is no longer): what the hint
    reads of a line (a one-line JSON file of 24 MB was decoded whole, character by character: 46 s, 2.8 GB). Cut where
    a character starts in each encoding told (GBK, Big5, Shift_JIS, EUC): after an ASCII byte that is no digit (a
    lone character, or a two-byte character's trail byte), else at `at`; at the end, after the last ASCII byte and
    then whole pairs of the non-ASCII bytes that follow it."""
    if len(line) <= WINDOW:
        return line
    start = max(0, min(at - WINDOW // 2, len(line) - WINDOW))
    if start:
        head = line[start:at]
        goes_on = len(head) - len(head.lstrip(_GOES_ON))
        start = start + goes_on + 1 if goes_on < len(head) else at
    end = min(len(line), start + WINDOW)
    if end < len(line):
        ascii_end = len(line[start:end].rstrip(_HIGH))
        end = start + ascii_end + (end - start - ascii_end) // 2 * 2
    return line[start:end]


def written_in(line: bytes, name: str) -> bool:
    """The line (its first WINDOW bytes) reads as Chinese in `name` ("GB18030", "BIG5"; any other: False) with two
    characters or more of those Chinese is mostly written with (`COMMON`), two in three of its characters or more."""
    codec = next(((codec, chinese_class) for n, codec, chinese_class in CODECS if n == name), None)
    text = _chinese(window(line), *codec) if codec else ""
    usual = _usual(text)
    return usual >= 2 and 3 * usual >= 2 * sum(not c.isascii() for c in text)


def _tally(lines: Iterable[bytes], bad: dict[str, list[int]]) -> dict[str, list[int]]:
    """For GB18030 and BIG5: [characters among `COMMON`, common characters] of the lines' readings, where they read
    as Chinese in it, over the first _MORE lines that are not UTF-8 among _SCANNED: the first line's (the bad one,
    read already) are `bad`; of each other, WINDOW bytes around its first that is not UTF-8 (`window`)."""
    tally = {name: list(counts) for name, counts in bad.items()}
    found = 1
    for number, line in enumerate(lines):
        if number >= _SCANNED or found >= _MORE:
            break
        if number == 0 or line.isascii():
            continue
        try:
            line.decode("utf-8")
            continue
        except UnicodeDecodeError as exc:
            found += 1
            line = window(line, exc.start)
        for name, (text, common) in readings(line).items():
            tally[name][0] += _usual(text)
            tally[name][1] += common
    return tally


def _usual(text: str) -> int:
    return sum(c in COMMON for c in text)


def _common(text: str, codec: str) -> int:
    """The characters of `text` among `codec`'s common ones: GB2312's punctuation and ideographs (lead byte 0xA1-0xA3
    or 0xB0-0xF7, trail 0xA1 or more; its rows 0xA4-0xAF hold kana, Greek, Cyrillic and nothing, which Big5's most
    used ideographs read as), Big5's punctuation and frequent ideographs (lead byte 0xA1-0xC6)."""
    count = 0
    for c in text:
        if c.isascii() or len(b := c.encode(codec)) != 2:
            continue
        if codec == "big5":
            count += 0xA1 <= b[0] <= 0xC6
        else:
            count += (0xA1 <= b[0] <= 0xA3 or 0xB0 <= b[0] <= 0xF7) and b[1] >= 0xA1
    return count


def _chinese(line: bytes, codec: str, chinese_class: re.Pattern[str]) -> str:
    """The line decoded, where it reads as Chinese in `codec`, else "". A Chinese character counts where both its bytes
    are non-ASCII, as every GB2312 one's are, or (Big5, whose trail byte may be ASCII) where its lead byte is one of
    its punctuation's or frequent ideographs' (0xA1-0xC6) and no ASCII letter or digit follows it: a Latin-1 accent
    before an ASCII letter (`naïve`: 0xEF 0x76) also decodes as an ideograph, but never so; one such character is
    enough (a character-level CoNLL line: `中 B-ORG`). Where two count, one before an ASCII letter or digit is left
    out of the share wanted (`台北101`: 北 is 0xA5 0x5F)."""
    try:
        text = line.decode(codec)
    except UnicodeDecodeError:
        return ""
    wide = [(i, c) for i, c in enumerate(text) if not c.isascii()]
    inside = [(i, c) for i, c in wide if not _between_letters(text, i, codec)]  # (a Latin-1 accent pair: two)
    counted = [i for i, c in inside if chinese_class.match(c) and _counts(text, i, codec)]
    chinese = len(counted)
    if chinese == 1 and min(text[counted[0]].encode(codec)) < 0x80 and text[counted[0] - 1:counted[0]].isdigit():
        return ""  # a Latin-1 sign between a number and a letter (`100°C.`, `5µg`: 0xB0 0x43 is one Big5 character)
    if chinese >= 2:  # Chinese enough: `iPhone和iPad` is no accent pair's, `台北101` no accent's
        wide = [(i, c) for i, c in inside if _counts(text, i, codec) or not _before_alnum(text, i, codec)]
    return text if chinese and chinese >= 0.9 * len(wide) else ""


def _counts(text: str, i: int, codec: str) -> bool:
    return min(text[i].encode(codec)) >= 0x80 or (codec == "big5" and 0xA1 <= text[i].encode(codec)[0] <= 0xC6
                                                   and not _before_alnum(text, i, codec))


def _before_alnum(text: str, i: int, codec: str) -> bool:
    """`text[i]` has an ASCII trail byte and an ASCII letter or digit after it: a Latin-1 accent before two ASCII
    letters (`Äst`: 0xC4 0x73 in Big5), or Chinese before a digit (`北1`)."""
    after = text[i + 1:i + 2]
    return min(text[i].encode(codec)) < 0x80 and after.isascii() and after.isalnum()


def _between_letters(text: str, i: int, codec: str) -> bool:
    """`text[i]` is a Latin-1 / cp1252 accent pair read as GBK or Big5: two accented letters' bytes (0xC0-0xFF each)
    between two ASCII letters (`informação`'s `çã`, `Größe`'s `öß` each decode as one ideograph) — not `iPhone和iPad`'s
    和 (0xBA 0xCD), Chinese written as such."""
    return 0 < i < len(text) - 1 and text[i - 1].isascii() and text[i - 1].isalpha() \
        and text[i + 1].isascii() and text[i + 1].isalpha() and min(text[i].encode(codec)) >= 0xC0
