"""The web UI's words in English and Chinese. Templates call `t("English text")`; a missing Chinese entry falls back
to the English (tests/test_ui.py checks that every text the templates use has one)."""

from __future__ import annotations

from collections.abc import Callable

ZH: dict[str, str] = {
    "Runs": "运行", "Launch": "启动训练", "Compare": "对比", "Playground": "试用", "Language": "语言",
    "name": "名称", "status": "状态", "task": "任务", "model": "模型", "method": "方法", "metrics": "指标",
    "started": "开始时间", "duration": "时长", "step": "步数", "report": "报告", "config": "配置", "log": "日志",
    "curves": "曲线", "running": "运行中", "finished": "已完成", "stopped": "已停止（可继续）", "failed": "失败",
    "unreadable": "无法读取",
    "empty": "空", "Stop": "停止", "Resume": "继续", "Open report": "打开报告", "No runs yet in": "还没有运行：",
    "Launch a run": "启动一次训练", "Run name": "运行名称", "Training data": "训练数据文件",
    "Validation data (optional)": "验证数据文件（可选）", "Epochs": "轮数", "Learning rate": "学习率",
    "Batch size": "批大小", "Max length": "最大长度", "More settings (key=value, one per line)":
    "更多设置（每行一个 key=value）", "Start training": "开始训练",
    "The job runs on its own: closing this page or restarting the UI does not stop it.":
    "训练在后台独立运行：关闭页面或重启界面都不会中断它。",
    "Compare two runs": "对比两次运行", "Show": "显示", "setting": "设置",
    "Only the settings that differ are shown.": "只显示不同的设置。",
    "Input": "输入", "Send": "发送", "Result": "结果", "Question": "问题", "Context": "上下文",
    "Text": "文本", "Text pair (optional)": "文本对（可选）", "Chat": "对话",
    "Choose a finished run": "选择已完成的运行",
    "no report yet": "尚无报告", "Refreshes every 2 s while the run is running.": "运行期间每 2 秒刷新一次。",
    "All runs": "全部运行", "key metrics": "主要指标", "pid": "进程号",
    "This run has no model to try.": "这次运行没有可试用的模型。",
    "loss": "损失", "evaluation": "评估", "latest": "最新",  # the curves' titles
    "text": "文本", "text_pair": "文本对", "question": "问题", "context": "上下文",  # the playground's input fields
    # the launch form's refusals of a run name (ui/jobs.py; str.format fields kept)
    "name: {name} — letters (Chinese too), digits, '.', '_' and '-' only, not starting with '.' or '-' (a folder name "
    "under {runs})": "名称：{name} — 只能用字母（含中文）、数字、“.”、“_”和“-”，且不能以“.”或“-”开头"
                     "（它是 {runs} 下的文件夹名）",
    "name: {name} — write it plainly: no full-width or compatibility forms, no blank-looking characters, at most 200 "
    "bytes": "名称：{name} — 请用常规写法：不用全角或兼容字符、不用看起来空白的字符，最多 200 字节",
    "name: {run} is a file, not a run folder; choose another name":
    "名称：{run} 是一个文件，不是运行文件夹；请换一个名称",
    "name: {run} already holds a run; choose another name": "名称：{run} 里已有一次运行；请换一个名称",
    "name: a job named {name} was launched before; choose another name": "名称：名为 {name} 的任务之前已启动过；"
                                                                         "请换一个名称",
}


def translator(lang: str) -> Callable[[str], str]:
    if lang == "zh":
        return lambda text: ZH.get(text, text)
    return lambda text: text


def pick_language(query: str | None, cookie: str | None, accept: str | None, default: str) -> str:
    """?lang= first (and remembered in a cookie), then the cookie, then --lang, then the browser's Accept-Language."""
    for choice in (query, cookie):
        if choice in ("en", "zh"):
            return choice
    if default in ("en", "zh"):
        return default
    return "zh" if (accept or "").lower().startswith("zh") else "en"
