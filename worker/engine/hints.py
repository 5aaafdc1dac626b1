"""Free-text InclusionHints -> the detector that finds such objects (English and Chinese, with synonyms).

An unknown hint is not an error: it maps to nothing and the crop is made as usual.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

# Each detector name with the words that reach it. Matching is on the normalised whole hint first, then
# on its words (so "a red car's licence plate" still finds the plate detector).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "face": (
        "face",
        "faces",
        "head",
        "heads",
        "portrait",
        "selfie",
        "facial",
        "人脸",
        "脸",
        "面部",
        "脸部",
        "头像",
        "人头",
        "面孔",
    ),
    "person": (
        "person",
        "persons",
        "people",
        "pedestrian",
        "pedestrians",
        "human",
        "humans",
        "man",
        "men",
        "woman",
        "women",
        "child",
        "children",
        "kid",
        "kids",
        "boy",
        "girl",
        "player",
        "crowd",
        "body",
        "人",
        "人物",
        "行人",
        "人类",
        "人群",
        "男人",
        "女人",
        "孩子",
        "儿童",
        "路人",
        "人体",
    ),
    "cat": ("cat", "cats", "kitten", "kittens", "kitty", "猫", "猫咪", "小猫", "猫脸"),
    "eye": ("eye", "eyes", "眼睛", "眼", "双眼"),
    "smile": ("smile", "smiles", "smiling", "laugh", "微笑", "笑容", "笑脸", "笑"),
    "plate": (
        "licence plate",
        "license plate",
        "licence plates",
        "license plates",
        "number plate",
        "number plates",
        "plate",
        "plates",
        "registration plate",
        "car plate",
        "numberplate",
        "车牌",
        "车牌号",
        "号牌",
        "牌照",
    ),
    "text": (
        "text",
        "texts",
        "sign",
        "signs",
        "signboard",
        "signboards",
        "signage",
        "word",
        "words",
        "letters",
        "caption",
        "title",
        "logo",
        "banner",
        "poster",
        "billboard",
        "label",
        "writing",
        "文字",
        "文本",
        "招牌",
        "标志",
        "标牌",
        "字",
        "广告牌",
        "标语",
        "牌子",
        "指示牌",
        "横幅",
    ),
}

# The object detector's COCO classes (people are "person" above; cats also use the cat-face cascade).
_OBJECT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "bicycle": ("bicycle", "bike", "cycle", "自行车", "单车", "脚踏车"),
    "car": ("car", "automobile", "vehicle", "sedan", "汽车", "轿车", "小汽车", "车辆"),
    "motorcycle": ("motorcycle", "motorbike", "scooter", "moped", "摩托车", "摩托", "电动车"),
    "airplane": ("airplane", "aeroplane", "plane", "aircraft", "jet", "airliner", "飞机", "客机"),
    "bus": ("bus", "buses", "coach", "公交车", "公共汽车", "巴士", "大巴"),
    "train": ("train", "locomotive", "tram", "火车", "列车", "高铁", "动车"),
    "truck": ("truck", "lorry", "lorries", "pickup", "卡车", "货车", "皮卡"),
    "boat": ("boat", "ship", "yacht", "sailboat", "canoe", "kayak", "ferry", "船", "小船", "轮船", "帆船"),
    "traffic light": ("traffic light", "traffic signal", "stoplight", "红绿灯", "交通灯", "信号灯"),
    "fire hydrant": ("fire hydrant", "hydrant", "消防栓"),
    "stop sign": ("stop sign", "停车标志", "停止标志"),
    "parking meter": ("parking meter", "停车计时器", "咪表"),
    "bench": ("bench", "benches", "长椅", "长凳"),
    "bird": ("bird", "鸟", "小鸟", "鸟类"),
    "dog": ("dog", "puppy", "puppies", "doggy", "狗", "小狗", "狗狗", "犬"),
    "horse": ("horse", "pony", "马"),
    "sheep": ("sheep", "lamb", "羊", "绵羊"),
    "cow": ("cow", "cattle", "bull", "ox", "calf", "牛", "奶牛"),
    "elephant": ("elephant", "大象"),
    "bear": ("bear", "熊"),
    "zebra": ("zebra", "斑马"),
    "giraffe": ("giraffe", "长颈鹿"),
    "backpack": ("backpack", "rucksack", "背包", "书包", "双肩包"),
    "umbrella": ("umbrella", "parasol", "伞", "雨伞"),
    "handbag": ("handbag", "purse", "手提包", "手袋"),
    "tie": ("tie", "necktie", "领带"),
    "suitcase": ("suitcase", "luggage", "行李箱", "手提箱", "旅行箱"),
    "frisbee": ("frisbee", "飞盘"),
    "skis": ("skis", "ski", "滑雪板"),
    "snowboard": ("snowboard", "单板"),
    "sports ball": ("sports ball", "ball", "football", "soccer ball", "basketball", "球", "足球", "篮球"),
    "kite": ("kite", "风筝"),
    "baseball bat": ("baseball bat", "bat", "棒球棒", "球棒"),
    "baseball glove": ("baseball glove", "glove", "mitt", "棒球手套"),
    "skateboard": ("skateboard", "滑板"),
    "surfboard": ("surfboard", "冲浪板"),
    "tennis racket": ("tennis racket", "racket", "racquet", "网球拍", "球拍"),
    "bottle": ("bottle", "瓶子", "瓶"),
    "wine glass": ("wine glass", "wineglass", "酒杯", "高脚杯"),
    "cup": ("cup", "mug", "杯子", "杯", "马克杯"),
    "fork": ("fork", "叉子"),
    "knife": ("knife", "knives", "刀", "刀子"),
    "spoon": ("spoon", "勺子", "汤匙"),
    "bowl": ("bowl", "碗"),
    "banana": ("banana", "香蕉"),
    "apple": ("apple", "苹果"),
    "sandwich": ("sandwich", "sandwiches", "三明治"),
    "orange": ("orange", "橙子", "橘子"),
    "broccoli": ("broccoli", "西兰花", "花椰菜"),
    "carrot": ("carrot", "胡萝卜"),
    "hot dog": ("hot dog", "hotdog", "热狗"),
    "pizza": ("pizza", "披萨", "比萨"),
    "donut": ("donut", "doughnut", "甜甜圈"),
    "cake": ("cake", "蛋糕"),
    "chair": ("chair", "椅子"),
    "couch": ("couch", "couches", "sofa", "沙发"),
    "potted plant": ("potted plant", "plant", "houseplant", "盆栽", "植物", "盆景"),
    "bed": ("bed", "床"),
    "dining table": ("dining table", "table", "餐桌", "桌子"),
    "toilet": ("toilet", "马桶"),
    "tv": ("tv", "television", "monitor", "电视", "电视机", "显示器"),
    "laptop": ("laptop", "computer", "笔记本电脑", "电脑"),
    "mouse": ("mouse", "鼠标"),
    "remote": ("remote", "remote control", "遥控器"),
    "keyboard": ("keyboard", "键盘"),
    "cell phone": ("cell phone", "phone", "mobile phone", "smartphone", "cellphone", "手机"),
    "microwave": ("microwave", "微波炉"),
    "oven": ("oven", "烤箱"),
    "toaster": ("toaster", "烤面包机"),
    "sink": ("sink", "水槽", "洗手池"),
    "refrigerator": ("refrigerator", "fridge", "冰箱"),
    "book": ("book", "书", "书本"),
    "clock": ("clock", "钟", "时钟"),
    "vase": ("vase", "花瓶"),
    "scissors": ("scissors", "剪刀"),
    "teddy bear": ("teddy bear", "teddy", "泰迪熊", "玩具熊"),
    "hair drier": ("hair drier", "hair dryer", "hairdryer", "吹风机"),
    "toothbrush": ("toothbrush", "牙刷"),
}  # fmt: skip

_LOOKUP: dict[str, str] = {
    word: name for table in (_SYNONYMS, _OBJECT_SYNONYMS) for name, words in table.items() for word in words
}
HINT_KINDS: frozenset[str] = frozenset(_SYNONYMS) | frozenset(_OBJECT_SYNONYMS)
"""Every kind a hint can resolve to: a detector name, or a class of the object detector."""
_WORD = re.compile(r"[a-z]+")


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    return re.sub(r"[\s_\-]+", " ", text)


def detector_for_hint(hint: str) -> str | None:
    """The detector name for a hint, or ``None`` when no detector understands it."""
    text = _normalise(hint)
    whole = _singular(text)  # the hint as it is when listed, else a regular plural's singular
    if whole in _LOOKUP:
        return _LOOKUP[whole]
    # A longer phrase: try its Chinese words, then the English ones (most specific detector first).
    for word in sorted((w for w in _LOOKUP if not w.isascii()), key=len, reverse=True):
        if word in text:
            return _LOOKUP[word]
    words = [_singular(w) for w in _WORD.findall(text)]
    for a, b in itertools.pairwise(words):
        if f"{a} {b}" in _LOOKUP:
            return _LOOKUP[f"{a} {b}"]
    for word in words:
        if word in _LOOKUP:
            return _LOOKUP[word]
    return None


def _singular(word: str) -> str:
    """A regular English plural to the listed singular ("dogs" -> "dog", "benches" -> "bench")."""
    if word in _LOOKUP or not word.endswith("s"):
        return word
    for cut in (1, 2):
        if word[:-cut] in _LOOKUP:
            return word[:-cut]
    return word
